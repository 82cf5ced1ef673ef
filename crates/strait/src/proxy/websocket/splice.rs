//! Zero-copy relaying of large payloads: on Linux, bytes move socket → pipe → socket inside
//! the kernel (`splice(2)`) and are never copied into the gateway. Plain TCP on both sides
//! only (TLS needs the bytes in user space). Owns one direction's pipe; knows nothing of
//! frames: the relay decides what may be spliced.

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::task::{Context, Poll, ready};

    use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// What a pipe is asked to hold (the kernel's default is 64 KiB; unprivileged processes
    /// may ask up to `/proc/sys/fs/pipe-max-size`, 1 MiB by default).
    const PIPE_SIZE: usize = 256 * 1024;

    const FLAGS: SpliceFlags = SpliceFlags::NONBLOCK.union(SpliceFlags::MOVE);

    pub struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        held: usize,
    }

    impl Pipe {
        pub fn new() -> io::Result<Self> {
            let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            // Larger moves per call; a pipe left at the default size works too.
            let _ = fcntl_setpipe_size(&write, PIPE_SIZE);
            Ok(Self {
                read,
                write,
                held: 0,
            })
        }

        pub fn held(&self) -> usize {
            self.held
        }

        /// Moves up to `max` bytes from `src` into the pipe, which must be empty (so a
        /// would-block can only be the socket's); `Ok(0)` at EOF.
        pub fn fill(
            &mut self,
            cx: &mut Context<'_>,
            src: &TcpStream,
            max: usize,
        ) -> Poll<io::Result<usize>> {
            debug_assert_eq!(self.held, 0, "fill an empty pipe only");
            let pipe = &self.write;
            loop {
                ready!(src.poll_read_ready(cx))?;
                match src.try_io(Interest::READABLE, || {
                    Ok(splice(src, None, pipe, None, max, FLAGS)?)
                }) {
                    Ok(n) => {
                        self.held = n;
                        return Poll::Ready(Ok(n));
                    }
                    // Readiness was stale and is now cleared: wait for the next.
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => return Poll::Ready(Err(err)),
                }
            }
        }

        /// Moves what the pipe holds (or part of it) into `dst`.
        pub fn drain(&mut self, cx: &mut Context<'_>, dst: &TcpStream) -> Poll<io::Result<usize>> {
            let pipe = &self.read;
            let held = self.held;
            loop {
                ready!(dst.poll_write_ready(cx))?;
                match dst.try_io(Interest::WRITABLE, || {
                    Ok(splice(pipe, None, dst, None, held, FLAGS)?)
                }) {
                    Ok(n) => {
                        self.held -= n.min(held);
                        return Poll::Ready(Ok(n));
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => return Poll::Ready(Err(err)),
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::task::{Context, Poll};

    use tokio::net::TcpStream;

    /// No `splice(2)` here: never made, so the relay always copies.
    pub enum Pipe {}

    impl Pipe {
        pub fn new() -> io::Result<Self> {
            Err(io::ErrorKind::Unsupported.into())
        }
        pub fn held(&self) -> usize {
            match *self {}
        }
        pub fn fill(
            &mut self,
            _: &mut Context<'_>,
            _: &TcpStream,
            _: usize,
        ) -> Poll<io::Result<usize>> {
            match *self {}
        }
        pub fn drain(&mut self, _: &mut Context<'_>, _: &TcpStream) -> Poll<io::Result<usize>> {
            match *self {}
        }
    }
}

pub use imp::Pipe;
