//! Long-lived TCP streams to the echo service that keep talking: every `interval` a small
//! numbered message, whose echo is checked before the next one goes out. Each stream records
//! its longest gap between two echoes, so a test can tell a flow that stalled for a while
//! from one that kept flowing.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::clients::greeted;
use crate::netns::NetNs;

/// A connected stream before it starts talking.
pub struct Stream {
    reader: BufReader<TcpStream>,
    /// The backend that greeted it.
    pub backend: usize,
    pub local: SocketAddr,
}

/// How one stream fared.
#[derive(Clone, Debug)]
pub struct Tally {
    pub backend: usize,
    pub local: SocketAddr,
    /// Messages sent and echoed intact.
    pub echoes: u64,
    /// The longest time from one echo to the next.
    pub longest_gap: Duration,
    /// Why the stream ended before it was told to stop.
    pub error: Option<String>,
}

impl Stream {
    /// Connects from `ns` to the echo service at `vip` and reads the greeting.
    pub fn open(ns: &NetNs, vip: SocketAddr) -> Result<Stream> {
        let (reader, local, backend) = greeted(ns, vip)?;
        Ok(Stream {
            reader,
            backend,
            local,
        })
    }

    /// Talks every `interval` until `stop` is set or an exchange fails.
    pub fn talk(mut self, interval: Duration, stop: &AtomicBool) -> Tally {
        let mut tally = Tally {
            backend: self.backend,
            local: self.local,
            echoes: 0,
            longest_gap: Duration::ZERO,
            error: None,
        };
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if let Err(err) = self.exchange(tally.echoes) {
                tally.error = Some(format!("after {} echoes: {err:#}", tally.echoes));
                break;
            }
            tally.echoes += 1;
            tally.longest_gap = tally.longest_gap.max(last.elapsed());
            last = Instant::now();
            thread::sleep(interval);
        }
        tally
    }

    fn exchange(&mut self, seq: u64) -> Result<()> {
        let message = format!("message {seq} from {}\n", self.local);
        self.reader
            .get_mut()
            .write_all(message.as_bytes())
            .context("sending")?;
        let mut echo = String::new();
        self.reader
            .read_line(&mut echo)
            .context("reading the echo")?;
        if echo != message {
            bail!("sent {message:?}, the echo was {echo:?}");
        }
        Ok(())
    }
}
