//! Bounds-checked access to packet bytes: the only way the programs touch the packet.

use aya_ebpf::programs::XdpContext;

/// Largest header offset the parsers will follow; keeps every offset provably bounded for the
/// verifier (Ethernet + 2 VLAN tags + IPv4 options or 4 IPv6 extension headers fit easily).
pub const MAX_OFFSET: usize = 512;

/// Pointer to a `T` at `offset` bytes into the packet, or `Err` when the packet is too short.
///
/// Use `T` of at least two bytes at variable offsets: for one byte LLVM rewrites the check to
/// `p >= end`, from which the verifier learns no range.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ()> {
    if offset > MAX_OFFSET {
        return Err(());
    }
    // `black_box` pins the pointer in one register: otherwise LLVM checks `start + (offset + n)`
    // and then accesses a separately computed `start + offset`, whose range the verifier never
    // learned.
    let p = core::hint::black_box(ctx.data() + offset);
    if p + core::mem::size_of::<T>() > ctx.data_end() {
        return Err(());
    }
    Ok(p as *mut T)
}

/// Reads a `T` (a byte array or integer) at `offset` without alignment assumptions.
#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, ()> {
    let p = ptr_at::<T>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that `size_of::<T>()` bytes at `p` lie inside the packet.
    Ok(unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
pub fn write<T: Copy>(ctx: &XdpContext, offset: usize, v: T) -> Result<(), ()> {
    let p = ptr_at::<T>(ctx, offset)?;
    // SAFETY: as in `read`; XDP packet memory is writable.
    unsafe { core::ptr::write_unaligned(p, v) };
    Ok(())
}

/// A big-endian u16 field.
#[inline(always)]
pub fn read_u16_be(ctx: &XdpContext, offset: usize) -> Result<u16, ()> {
    Ok(u16::from_be(read::<u16>(ctx, offset)?))
}

#[inline(always)]
pub fn len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}
