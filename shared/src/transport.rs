//! Local sockets (interprocess) and the framed reader and writer over them.
//!
//! On Unix the socket is a file in a directory the coordinator made private (mode 0700), bound
//! with mode 0600: never a Linux abstract-namespace name, which any local user can connect to or
//! squat. interprocess inserts no framing of its own and its tokio `shutdown()` does not signal
//! end of file to the peer, so every message is framed explicitly ([`crate::codec`]) and the end
//! of work is a message ([`crate::ToWorker::Shutdown`]).

use crate::codec::{self, CodecError};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, Name, ToFsName};
use serde::Serialize;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

pub use interprocess::local_socket::tokio::{Listener, Stream};

/// Who is at the other end of a connection (SO_PEERCRED where the platform has it): its
/// effective uid and its pid, each `None` where the platform does not say.
pub fn peer(stream: &Stream) -> io::Result<(Option<u32>, Option<u32>)> {
    #[cfg(unix)]
    {
        use interprocess::local_socket::traits::StreamCommon as _;
        let creds = stream.peer_creds()?;
        let uid = creds.euid();
        Ok((uid, creds.pid().and_then(|p| u32::try_from(p).ok())))
    }
    #[cfg(not(unix))]
    {
        let _ = stream;
        Ok((None, None))
    }
}

fn fs_name(path: &Path) -> io::Result<Name<'_>> {
    path.to_fs_name::<GenericFilePath>()
}

/// Binds a listening socket at `path`, readable and writable by its owner only.
pub fn bind(path: &Path) -> io::Result<Listener> {
    let options = ListenerOptions::new().name(fs_name(path)?);
    #[cfg(unix)]
    let options = {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        options.mode(0o600)
    };
    options.create_tokio()
}

/// Connects to the socket at `path`.
pub async fn connect(path: &Path) -> io::Result<Stream> {
    Stream::connect(fs_name(path)?).await
}

/// A connection from one end of a socket pair (`socketpair(2)`), made non-blocking as the
/// runtime requires. Nothing but the holder of the other end can be at the other end: no path,
/// no listener, so no one else can connect.
#[cfg(unix)]
pub fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Stream> {
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream.set_nonblocking(true)?;
    let uds = interprocess::os::unix::uds_local_socket::tokio::Stream::try_from(
        std::os::fd::OwnedFd::from(std_stream),
    )?;
    Ok(Stream::from(uds))
}

/// Splits a connection into a frame reader and a frame writer.
pub fn split(stream: Stream) -> (FrameReader<Half>, FrameWriter<Half>) {
    let stream = Arc::new(stream);
    (FrameReader::new(Half(Arc::clone(&stream))), FrameWriter::new(Half(stream)))
}

/// One direction of a connection. `&Stream` reads and writes, so both halves share the stream
/// (interprocess deprecates its own split halves in favour of this).
#[derive(Debug)]
pub struct Half(Arc<Stream>);

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        (*self.0).is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_shutdown(cx)
    }
}

/// Reads whole frames; a length prefix above [`codec::MAX_FRAME`] is an error, not an allocation.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: FramedRead<R, LengthDelimitedCodec>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        FrameReader { inner: FramedRead::with_capacity(io, codec::frame_decoder(), 64 << 10) }
    }

    /// The next frame body, or `None` at a clean end of file.
    pub async fn next_frame(&mut self) -> io::Result<Option<BytesMut>> {
        self.inner.next().await.transpose()
    }
}

/// Writes whole frames from one reused buffer, so steady-state sends allocate nothing.
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    buf: BytesMut,
}

/// Why a frame could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> Self {
        FrameWriter { io, buf: BytesMut::with_capacity(64 << 10) }
    }

    /// Encodes and sends one message.
    pub async fn send<M: Serialize>(&mut self, msg: &M) -> Result<(), SendError> {
        self.buf.clear();
        codec::write_frame(msg, &mut self.buf)?;
        self.flush_buf().await
    }

    /// Sends one frame that `build` appends to the (empty) reused buffer, for frames built in
    /// place such as [`codec::ItemsFrame`].
    pub async fn send_built(
        &mut self,
        build: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
    ) -> Result<(), SendError> {
        self.buf.clear();
        build(&mut self.buf)?;
        self.flush_buf().await
    }

    /// Sends one frame already encoded in `frame` (for example by
    /// [`codec::finish_done_frame`]), without copying it.
    pub async fn send_encoded(&mut self, frame: &[u8]) -> Result<(), SendError> {
        self.io.write_all(frame).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Sends one frame made of `head` (length prefix and message header) then `tail` (its
    /// payload), without joining them in a buffer.
    pub async fn send_parts(&mut self, head: &[u8], tail: &[u8]) -> Result<(), SendError> {
        self.io.write_all(head).await?;
        self.io.write_all(tail).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Sends one frame given as `parts` (its length prefix and header first), written straight
    /// from where they lie with vectored writes: no copy into a buffer. For frames whose
    /// payload is large pieces held elsewhere (fetched bodies).
    pub async fn send_vectored(
        &mut self,
        mut parts: &mut [io::IoSlice<'_>],
    ) -> Result<(), SendError> {
        // The kernel takes at most IOV_MAX (1024 on Linux) slices a call.
        const MAX_SLICES: usize = 1024;
        while !parts.is_empty() {
            let n = self.io.write_vectored(&parts[..parts.len().min(MAX_SLICES)]).await?;
            if n == 0 {
                return Err(SendError::Io(io::ErrorKind::WriteZero.into()));
            }
            io::IoSlice::advance_slices(&mut parts, n);
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Sends bytes as they are, framing included. For tests that play a broken peer.
    pub async fn send_raw(&mut self, bytes: Bytes) -> Result<(), SendError> {
        self.io.write_all(&bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    async fn flush_buf(&mut self) -> Result<(), SendError> {
        self.io.write_all(&self.buf).await?;
        self.io.flush().await?;
        // Keep the buffer's memory for the next frame unless one huge frame inflated it.
        if self.buf.capacity() > 2 * codec::MAX_FRAME {
            self.buf = BytesMut::with_capacity(64 << 10);
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_vectored_frame_of_more_slices_than_the_kernel_takes_at_once_arrives_whole() {
        let (a, mut b) = tokio::net::UnixStream::pair().expect("a socket pair");
        let pieces: Vec<Vec<u8>> = (0..3000u32).map(|i| vec![i as u8; (i % 7) as usize]).collect();
        let expected: Vec<u8> = pieces.concat();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            b.read_exact(&mut got).await.expect("reads");
            assert_eq!(got, expected);
        });
        let mut writer = FrameWriter::new(a);
        let mut parts: Vec<io::IoSlice<'_>> = pieces.iter().map(|p| io::IoSlice::new(p)).collect();
        writer.send_vectored(&mut parts).await.expect("sends");
        reader.await.expect("every byte, in order");
    }
}
