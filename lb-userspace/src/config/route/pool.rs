//! A proxy route's `pool` and `backend_port`: which `[[vip]]`'s backends it sends to, on which
//! port.
//!
//! | `pool` | `backend_port` | The route sends to |
//! |---|---|---|
//! | left out | left out | the listener's pool on its `backend_port` |
//! | left out | set | the listener's pool on this port |
//! | the listener's | left out | the listener's pool on its `backend_port` |
//! | another VIP | left out | that VIP's backends on the VIP's port (as an edge's own `pool` does) |
//! | another VIP | set | that VIP's backends on this port |
//!
//! The VIP must exist and be TCP. A VIP without backends is accepted, as an edge's own pool
//! is: the route answers 503 until a reload gives the VIP backends.

use super::{Listener, RoutePool};
use crate::config::{errors::Report, fields, raw, vip, Vip};

/// The route's VIP (`None` when broken, reported already; its affinity is checked against
/// it) and its [`RoutePool`] (`None`: the listener's). `None` when the route's keys are wrong.
pub(super) fn route_pool<'v>(
    r: &mut Report,
    v: &raw::Route,
    listener: &Listener<'v>,
    f: &dyn Fn(&str) -> String,
) -> Option<(Option<&'v Vip>, Option<RoutePool>)> {
    let port = match &v.backend_port {
        Some(p) => fields::int::<u16>(
            r,
            p,
            &f("backend_port"),
            1..=i64::from(u16::MAX),
            "the port of the route pool's backends, plain HTTP",
        )
        .map(Some),
        None => Some(None),
    };
    let vip = match &v.pool {
        // With broken VIPs the names are unknown; their errors are reported already.
        Some(name) => match listener.vips {
            Some(vips) => vip::pool(r, name, &f("pool"), vips).map(Some),
            None => Some(None),
        },
        None => Some(listener.pool),
    };
    let (port, vip) = (port?, vip?);
    let (Some(vip), Some(own), Some(own_port)) = (vip, listener.pool, listener.backend_port) else {
        // Something the route depends on is broken and reported: the route's own keys were
        // checked, nothing more can be.
        return Some((vip, None));
    };
    let same_vip = vip.name == own.name;
    let backend_port = port.unwrap_or(if same_vip { own_port } else { vip.port });
    let target = (!same_vip || backend_port != own_port).then(|| RoutePool {
        vip: vip.name.clone(),
        backend_port,
    });
    Some((Some(vip), target))
}
