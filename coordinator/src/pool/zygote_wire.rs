//! The zygote's socket pair (`zygote.rs`): one request from the coordinator (the run's
//! variables and each worker's id and number), one answer per worker (its pid, or why it could
//! not be forked; with the pid, the coordinator's end of the worker's connection, passed as
//! `SCM_RIGHTS`). A `SOCK_SEQPACKET` pair keeps each message whole.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// How long the coordinator waits for the zygote's answer before it executes the workers.
pub(super) const ANSWER_TIMEOUT_S: libc::time_t = 5;

pub(super) fn timeout(socket: &OwnedFd) -> io::Result<()> {
    let limit = libc::timeval { tv_sec: ANSWER_TIMEOUT_S, tv_usec: 0 };
    // SAFETY: setsockopt reads the struct we pass, of the size we pass.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&limit as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(super) fn send(socket: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: send reads `bytes` only.
    let sent = unsafe {
        libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL)
    };
    if sent == bytes.len() as isize {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `bytes` with the descriptor `fd` attached (`SCM_RIGHTS`): the receiver gets its own
/// copy; the sender still has to close its one.
pub(super) fn send_fd(socket: &OwnedFd, bytes: &[u8], fd: RawFd) -> io::Result<()> {
    let mut iov =
        libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    let mut control = Control::new();
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the sendmsg call, and
    // the control buffer is aligned for a cmsghdr and has room for one header and one
    // descriptor (`Control`).
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf.as_mut_ptr().cast();
        msg.msg_controllen = Control::space() as _;
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), fd);
        libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent == bytes.len() as isize {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Room for the control message of one descriptor, aligned as a `cmsghdr` must be.
struct Control {
    buf: [u64; 8],
}

impl Control {
    fn new() -> Control {
        const { assert!(std::mem::align_of::<u64>() >= std::mem::align_of::<libc::cmsghdr>()) };
        let control = Control { buf: [0; 8] };
        assert!(Control::space() <= std::mem::size_of_val(&control.buf));
        control
    }

    /// The bytes one descriptor's control message takes (`CMSG_SPACE`).
    fn space() -> usize {
        // SAFETY: CMSG_SPACE is a pure size computation.
        unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize }
    }
}

/// Receives one message into `buf`, and the descriptor attached to it if any (close-on-exec).
pub(super) fn recv_fd(socket: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    recv_fd_with(socket, buf, 0)
}

/// [`recv_fd`], or `WouldBlock` at once if no message is waiting.
pub(super) fn try_recv_fd(
    socket: &OwnedFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<OwnedFd>)> {
    recv_fd_with(socket, buf, libc::MSG_DONTWAIT)
}

fn recv_fd_with(
    socket: &OwnedFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut control = Control::new();
    loop {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: a zeroed msghdr is valid; recvmsg writes at most `buf.len()` bytes into
        // `buf` and at most the control buffer's size into it, both alive for the call.
        let (got, msg) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.buf.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control.buf) as _;
            let got = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | flags);
            (got, msg)
        };
        match got {
            n if n > 0 => {
                let mut fds = Vec::new();
                // SAFETY: the kernel filled the control buffer and set msg_controllen;
                // CMSG_FIRSTHDR and CMSG_NXTHDR stay within it, and an SCM_RIGHTS header's
                // data is descriptors that are now ours, each owned (and closed) once.
                unsafe {
                    let mut header = libc::CMSG_FIRSTHDR(&msg);
                    while !header.is_null() {
                        if (*header).cmsg_level == libc::SOL_SOCKET
                            && (*header).cmsg_type == libc::SCM_RIGHTS
                        {
                            let data = libc::CMSG_DATA(header).cast::<RawFd>();
                            let bytes = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                            for i in 0..bytes / std::mem::size_of::<RawFd>() {
                                let raw = std::ptr::read_unaligned(data.add(i));
                                fds.push(OwnedFd::from_raw_fd(raw));
                            }
                        }
                        header = libc::CMSG_NXTHDR(&msg, header);
                    }
                }
                // One descriptor is expected; any other is closed here.
                return Ok((n as usize, fds.into_iter().next()));
            }
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => return Err(io::Error::last_os_error()),
        }
    }
}

/// The length of the next message waiting on `socket`, without taking it (`MSG_TRUNC` gives a
/// sequenced packet's whole length), so the buffer for it can be exactly that.
pub(super) fn peek_len(socket: &OwnedFd) -> io::Result<usize> {
    loop {
        // SAFETY: with a zero length, recv writes nothing; the pointer is never read.
        let got = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_PEEK | libc::MSG_TRUNC,
            )
        };
        match got {
            n if n > 0 => return Ok(n as usize),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => return Err(io::Error::last_os_error()),
        }
    }
}

pub(super) fn recv(socket: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
        let got = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        match got {
            n if n > 0 => return Ok(n as usize),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => return Err(io::Error::last_os_error()),
        }
    }
}

/// A request: `KEY=VALUE` entries, an empty entry, then `ID,NUMBER` entries; each entry ends
/// in a NUL.
pub(super) fn encode(vars: &[(&str, String)], workers: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in vars {
        out.extend_from_slice(format!("{key}={value}\0").as_bytes());
    }
    out.push(0);
    for (id, number) in workers {
        out.extend_from_slice(format!("{id},{number}\0").as_bytes());
    }
    out
}

type Request = (Vec<(String, String)>, Vec<(u64, u64)>);

pub(super) fn decode(bytes: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\0')?;
    let (vars, workers) =
        text.split_once("\0\0").or_else(|| text.strip_prefix('\0').map(|w| ("", w)))?;
    let vars = vars
        .split('\0')
        .filter(|e| !e.is_empty())
        .map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect::<Option<Vec<_>>>()?;
    let workers = workers
        .split('\0')
        .map(|e| {
            let (id, number) = e.split_once(',')?;
            Some((id.parse().ok()?, number.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((vars, workers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips() {
        let vars = [("POWERPOOL_SOCKET", "/run/x/pool.sock".to_owned()), ("A", "b=c".to_owned())];
        let workers = [(0, 1), (1, 2), (17, 4)];
        let (v, w) = decode(&encode(&vars, &workers)).expect("decodes");
        assert_eq!(
            v,
            vec![
                ("POWERPOOL_SOCKET".into(), "/run/x/pool.sock".into()),
                ("A".into(), "b=c".into())
            ]
        );
        assert_eq!(w, workers);
        let (v, w) = decode(&encode(&[], &[(3, 1)])).expect("decodes without variables");
        assert!(v.is_empty());
        assert_eq!(w, [(3, 1)]);
    }

    #[test]
    fn a_descriptor_travels_with_its_answer() {
        let pair = |kind| {
            let mut fds = [0 as RawFd; 2];
            // SAFETY: socketpair writes two descriptors into the array we pass.
            assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) }, 0);
            // SAFETY: both were just made and are owned here alone.
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
        };
        let (zygote, coordinator) = pair(libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC);
        let (ours, theirs) = pair(libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
        send_fd(&zygote, &42i32.to_le_bytes(), ours.as_raw_fd()).expect("sends");
        drop(ours);
        let mut answer = [0u8; 4];
        let (n, fd) = recv_fd(&coordinator, &mut answer).expect("receives");
        assert_eq!((n, i32::from_le_bytes(answer)), (4, 42));
        // The descriptor received is the other end of `theirs`: bytes cross.
        let mut received = std::os::unix::net::UnixStream::from(fd.expect("a descriptor"));
        let mut theirs = std::os::unix::net::UnixStream::from(theirs);
        use std::io::{Read, Write};
        theirs.write_all(b"ping").expect("writes");
        let mut got = [0u8; 4];
        received.read_exact(&mut got).expect("reads");
        assert_eq!(&got, b"ping");
        // An answer without a descriptor comes without one.
        send(&zygote, &7i32.to_le_bytes()).expect("sends");
        let (_, fd) = recv_fd(&coordinator, &mut answer).expect("receives");
        assert!(fd.is_none());
    }

    #[test]
    fn a_malformed_request_is_refused() {
        assert!(decode(b"A=b\0\0x,1\0").is_none(), "a bad id");
        assert!(decode(b"A=b\0\x001,2").is_none(), "no final NUL");
        assert!(decode(b"Ab\0\x001,2\0").is_none(), "a variable without =");
    }
}
