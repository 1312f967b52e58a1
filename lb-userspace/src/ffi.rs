//! The only code in lb-userspace that is not safe Rust (the crate root denies `unsafe_code`
//! and allows it here alone): calls that neither aya, `nix` nor std wraps.
//!
//! - bpf(2) map commands aya 0.14 lacks: `BPF_MAP_LOOKUP_BATCH` / `BPF_MAP_DELETE_BATCH`
//!   (one call moves thousands of conntrack entries where per-key iteration costs two syscalls
//!   each, 2 million for a full table) and `BPF_MAP_LOOKUP_ELEM` on a borrowed map fd (the
//!   census and the conntrack walk hold the map through a second handle, not an aya `Map`).
//!   `nix` has no bpf(2) wrapper.
//! - glibc's `mallopt`, which fixes the mmap threshold (why: [`crate::allocator`]). A
//!   replacement allocator crate would avoid it, but this one call was measured to keep RSS
//!   flat in the soak; the swap would need the same measurements.
//! - setsockopt(2) `TCP_MD5SIG` (RFC 2385 keys on the BGP sessions): neither `nix` 0.29 nor
//!   socket2 has it, and libc has the constant but not `struct tcp_md5sig`.
//!
//! Every `unsafe` block has a `SAFETY:` line; keep this module this small.

use std::io;

/// glibc's `mallopt(M_MMAP_THRESHOLD, bytes)`; `false` when glibc refused it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn set_mmap_threshold(bytes: i32) -> bool {
    // SAFETY: mallopt only sets an allocator parameter; it takes no pointers.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
}

/// `BPF_MAP_LOOKUP_BATCH` and `BPF_MAP_DELETE_BATCH` (uapi `enum bpf_cmd`). aya 0.14 wraps
/// neither; one call moves thousands of entries where per-key iteration costs two syscalls
/// each (2 million for a full conntrack table).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of uapi `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; the pointers in it come
    // from the callers' live, correctly sized buffers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `BPF_MAP_LOOKUP_ELEM` (uapi `enum bpf_cmd`).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;

/// The element-command member of uapi `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The value under `key` in the map `fd`, `None` when there is none.
pub fn lookup<K: aya::Pod, V: aya::Pod>(
    fd: std::os::fd::BorrowedFd<'_>,
    key: &K,
) -> io::Result<Option<V>> {
    use std::os::fd::AsRawFd as _;
    let mut value = std::mem::MaybeUninit::<V>::uninit();
    let mut attr = ElemAttr {
        map_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
        key: std::ptr::from_ref(key) as u64,
        value: value.as_mut_ptr() as u64,
        ..ElemAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; `key` and `value` point
    // at live objects of the map's key and value sizes (the caller's types, which are the
    // map's).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            std::ptr::from_mut(&mut attr),
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: the kernel filled all `size_of::<V>()` bytes, and `V` is `Pod` (any bytes valid).
    Ok(Some(unsafe { value.assume_init() }))
}

/// Where a batch walk of a hash map stands: the kernel's opaque resume token.
#[derive(Default)]
pub struct BatchCursor {
    token: [u8; 8],
    started: bool,
    done: bool,
}

impl BatchCursor {
    pub fn done(&self) -> bool {
        self.done
    }
}

/// Reads the next entries of the hash map `fd` into `keys`/`values` (up to their common
/// length) and returns how many were read; the cursor says when the walk is complete.
pub fn lookup_batch<K: aya::Pod, V: aya::Pod>(
    fd: std::os::fd::BorrowedFd<'_>,
    cursor: &mut BatchCursor,
    keys: &mut [K],
    values: &mut [V],
) -> io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    if cursor.done {
        return Ok(0);
    }
    let room = keys.len().min(values.len());
    let mut out = [0u8; 8];
    let mut attr = BatchAttr {
        in_batch: if cursor.started {
            cursor.token.as_ptr() as u64
        } else {
            0
        },
        out_batch: out.as_mut_ptr() as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: u32::try_from(room).unwrap_or(u32::MAX),
        map_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
        ..BatchAttr::default()
    };
    let result = bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr);
    let n = usize::try_from(attr.count).unwrap_or(0).min(room);
    match result {
        Ok(()) => {}
        // The end of the map: `count` still says how many this last call read.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => cursor.done = true,
        Err(e) => return Err(e),
    }
    cursor.token = out;
    cursor.started = true;
    Ok(n)
}

/// Deletes `keys` from the hash map `fd`; a key already gone (an LRU eviction, the program)
/// is skipped. Returns how many were deleted.
pub fn delete_batch<K: aya::Pod>(fd: std::os::fd::BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    let mut deleted = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: u32::try_from(rest.len()).unwrap_or(u32::MAX),
            map_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
            ..BatchAttr::default()
        };
        let result = bpf_batch(BPF_MAP_DELETE_BATCH, &mut attr);
        let n = usize::try_from(attr.count).unwrap_or(0).min(rest.len());
        deleted += n;
        match result {
            Ok(()) => rest = &rest[n..],
            // The key at `n` is gone already: skip it and go on with the rest.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                rest = rest.get(n + 1..).unwrap_or(&[]);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// uapi `struct tcp_md5sig` (linux/tcp.h): the peer's address as a
/// `__kernel_sockaddr_storage` (128 bytes, pointer-aligned), then flags, prefix length, key
/// length, interface and the key.
#[repr(C, align(8))]
struct TcpMd5Sig {
    addr: [u8; 128],
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; libc::TCP_MD5SIG_MAXKEYLEN],
}

/// Signs every segment of `socket`'s connection to `peer` with `key` (TCP MD5, RFC 2385).
/// Set before connect(2), so the SYN is signed too. `InvalidInput` for a key longer than
/// `TCP_MD5SIG_MAXKEYLEN` (the config refuses those first).
pub fn set_tcp_md5(
    socket: std::os::fd::BorrowedFd<'_>,
    peer: std::net::IpAddr,
    key: &[u8],
) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let mut sig = TcpMd5Sig {
        addr: [0; 128],
        flags: 0,
        prefixlen: 0,
        keylen: u16::try_from(key.len()).unwrap_or(u16::MAX),
        ifindex: 0,
        key: [0; libc::TCP_MD5SIG_MAXKEYLEN],
    };
    sig.key
        .get_mut(..key.len())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?
        .copy_from_slice(key);
    // `sockaddr_in` / `sockaddr_in6` written field by field (family in host order, port 0:
    // the kernel matches the key by address alone).
    match peer {
        std::net::IpAddr::V4(a) => {
            let family = u16::try_from(libc::AF_INET).unwrap_or_default();
            sig.addr[..2].copy_from_slice(&family.to_ne_bytes());
            sig.addr[4..8].copy_from_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            let family = u16::try_from(libc::AF_INET6).unwrap_or_default();
            sig.addr[..2].copy_from_slice(&family.to_ne_bytes());
            sig.addr[8..24].copy_from_slice(&a.octets());
        }
    }
    // SAFETY: `sig` is a live, correctly laid out `struct tcp_md5sig` of the size passed; the
    // kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::from_ref(&sig).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<TcpMd5Sig>()).unwrap_or(0),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The kernel reads `struct tcp_md5sig` as 216 bytes (128 + 1 + 1 + 2 + 4 + 80).
    #[test]
    fn tcp_md5sig_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<super::TcpMd5Sig>(), 216);
        assert_eq!(std::mem::offset_of!(super::TcpMd5Sig, key), 136);
    }
}
