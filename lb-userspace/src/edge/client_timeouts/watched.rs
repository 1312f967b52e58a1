//! The client stream as hyper sees it: it tells the connection's [`Activity`] when a request
//! head begins, and once the watchdog cut the head, answers it with a 408 from underneath
//! hyper (which has no answer for a head it never got whole).

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{h2_frames::Framing, Activity};

/// What a cut HTTP/1.x head gets, exactly what sluice's own error responses look like.
const RESPONSE_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n\
content-type: text/plain\r\ncontent-length: 20\r\n\r\n408 Request Timeout\n";

/// A client stream (after TLS) that keeps its connection's [`Activity`] up to date.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    framing: Framing,
    /// hyper's last write or flush did not complete: part of a response may still sit in its
    /// buffer, and a 408 written now could land in the middle of it.
    write_pending: bool,
    answer: Answer,
}

/// Where the answer to a cut head stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    None,
    /// Bytes of [`RESPONSE_408`] written so far.
    Writing(usize),
    Flushing,
    ShuttingDown,
    /// Reading (and dropping) what the client still sends, so that closing the socket with
    /// unread bytes does not reset the connection before the client has read its 408.
    Lingering,
    Done,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched {
            inner,
            activity,
            framing: Framing::new(),
            write_pending: false,
            answer: Answer::None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Watched<S> {
    /// After a cut: answers 408 when the client speaks HTTP/1.x and nothing of a response is
    /// pending, then fails the read so hyper ends the connection.
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.answer = match self.answer {
                Answer::None if self.framing.is_h1() && !self.write_pending => Answer::Writing(0),
                Answer::None => Answer::Done,
                Answer::Writing(at) => {
                    let rest = RESPONSE_408.get(at..).unwrap_or_default();
                    match ready!(Pin::new(&mut self.inner).poll_write(cx, rest))? {
                        0 => Answer::Done,
                        n if at + n >= RESPONSE_408.len() => Answer::Flushing,
                        n => Answer::Writing(at + n),
                    }
                }
                Answer::Flushing => {
                    ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                    Answer::ShuttingDown
                }
                Answer::ShuttingDown => {
                    ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
                    Answer::Lingering
                }
                Answer::Lingering => {
                    let mut scratch = [0u8; 1024];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() => Answer::Lingering,
                        _ => Answer::Done,
                    }
                }
                Answer::Done => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not complete within request_header_timeout",
                    )))
                }
            };
        }
    }

    fn saw(&mut self, bytes: &[u8]) {
        if let Some(open) = self.framing.feed(bytes) {
            self.activity.h2_block(open);
        }
        if self.framing.is_h1() {
            self.activity.h1_bytes();
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.head_expired() {
            return this.poll_cut(cx);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(new) = buf.filled().get(before..).filter(|b| !b.is_empty()) {
            this.saw(new);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_pending = poll.is_pending();
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_pending = poll.is_pending();
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_pending = poll.is_pending();
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
