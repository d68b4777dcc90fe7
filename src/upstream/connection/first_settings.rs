//! Watches the first frame an upstream sends: a peer that speaks HTTP/2
//! starts with a SETTINGS frame (RFC 9113 §3.4). The dialler counts a
//! connection as up only once one has been read whole.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// Passes a connection's bytes through, watching the first frame the
/// upstream sends: HTTP/2 makes it a SETTINGS frame (RFC 9113 §3.4), so once
/// one has been read whole the peer speaks HTTP/2. `settings` is sent then,
/// or dropped as soon as the first bytes are anything else.
#[derive(Debug)]
pub(super) struct FirstSettings<T> {
    io: T,
    /// The first frame's 9-byte header, as far as it has been read.
    header: [u8; FRAME_HEADER_LEN],
    header_read: usize,
    /// Payload bytes of the SETTINGS frame still to come.
    payload_left: usize,
    settings: Option<oneshot::Sender<()>>,
}

const FRAME_HEADER_LEN: usize = 9;
const FRAME_TYPE_SETTINGS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;

// === impl FirstSettings ===

impl<T> FirstSettings<T> {
    pub(super) fn new(io: T, settings: oneshot::Sender<()>) -> FirstSettings<T> {
        FirstSettings {
            io,
            header: [0; FRAME_HEADER_LEN],
            header_read: 0,
            payload_left: 0,
            settings: Some(settings),
        }
    }

    /// Follows the first frame through bytes as they are read.
    fn watch(&mut self, mut bytes: &[u8]) {
        while self.settings.is_some() && !bytes.is_empty() {
            if self.header_read < FRAME_HEADER_LEN {
                let take = bytes.len().min(FRAME_HEADER_LEN - self.header_read);
                self.header[self.header_read..self.header_read + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_read += take;
                bytes = &bytes[take..];
                if self.header_read == FRAME_HEADER_LEN {
                    self.read_header();
                }
            } else {
                let take = bytes.len().min(self.payload_left);
                self.payload_left -= take;
                bytes = &bytes[take..];
            }
            if self.header_read == FRAME_HEADER_LEN
                && self.payload_left == 0
                && let Some(settings) = self.settings.take()
            {
                let _ = settings.send(());
            }
        }
    }

    /// Checks the first frame's header is a SETTINGS frame's (length, type,
    /// flags, stream 0); if not, drops the sender to say so.
    fn read_header(&mut self) {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = self.header;
        let length = u32::from_be_bytes([0, l0, l1, l2]) as usize;
        let stream = u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff;
        let is_settings = kind == FRAME_TYPE_SETTINGS
            && flags & FLAG_ACK == 0
            && stream == 0
            && length.is_multiple_of(6);
        if is_settings {
            self.payload_left = length;
        } else {
            self.settings = None;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstSettings<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.settings.is_some() {
            this.watch(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstSettings<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(chunks: &[&[u8]]) -> Result<(), oneshot::error::TryRecvError> {
        let (tx, mut rx) = oneshot::channel();
        let mut watch = FirstSettings::new((), tx);
        for chunk in chunks {
            watch.watch(chunk);
        }
        rx.try_recv()
    }

    #[test]
    fn settings_frame_is_seen_across_reads() {
        let settings: &[u8] = &[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        assert_eq!(watched(&[settings]), Ok(()));
        assert_eq!(
            watched(&[&settings[..4], &settings[4..10], &settings[10..]]),
            Ok(())
        );
        // An empty SETTINGS frame followed by more frames.
        assert_eq!(watched(&[&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 8]]), Ok(()));
    }

    #[test]
    fn incomplete_settings_frame_is_not_enough() {
        assert_eq!(
            watched(&[&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3]]),
            Err(oneshot::error::TryRecvError::Empty)
        );
    }

    #[test]
    fn anything_else_first_is_not_http2() {
        for first in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            &[0, 0, 0, 4, 1, 0, 0, 0, 0], // a SETTINGS ack
            &[0, 0, 8, 6, 0, 0, 0, 0, 0], // a PING
            &[0, 0, 5, 4, 0, 0, 0, 0, 0], // a length no setting adds up to
            &[0, 0, 0, 4, 0, 0, 0, 0, 1], // on a stream
        ] {
            assert_eq!(
                watched(&[first]),
                Err(oneshot::error::TryRecvError::Closed),
                "{first:?}"
            );
        }
    }
}
