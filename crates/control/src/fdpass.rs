//! Passing a file descriptor over the control socket (`SCM_RIGHTS`): `osctl
//! upgrade` hands sysd the open bundle (a file, or the pipe of `osctl upgrade
//! -`) instead of copying its bytes through the socket. On a small board the
//! copy through the socket cost as much as writing the slot.
//!
//! One byte (`F`) carries the descriptor, so the receiver knows the message
//! arrived even if the kernel dropped the descriptor (it then says so).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Send `fd` (and one byte) on `stream`.
pub fn send_fd(stream: &UnixStream, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("no room for the descriptor"));
    }
    let sent = sendmsg(
        stream.as_fd(),
        &[IoSlice::new(b"F")],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != 1 {
        return Err(std::io::Error::other("the descriptor message was not sent"));
    }
    Ok(())
}

/// Receive the descriptor [`send_fd`] sent. Honours the socket's read timeout.
pub fn recv_fd(stream: &UnixStream) -> std::io::Result<OwnedFd> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = recvmsg(
        stream.as_fd(),
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.bytes == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the client closed the connection before it sent the bundle's descriptor",
        ));
    }
    let mut fd = None;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            // Any extra descriptors are dropped (closed) with the iterator.
            if fd.is_none() {
                fd = fds.next();
            }
        }
    }
    fd.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the client's message carried no file descriptor",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_file_and_a_pipe_cross_the_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle");
        std::fs::write(&path, b"bundle bytes").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        send_fd(&a, f.as_fd()).unwrap();
        drop(f);
        let mut got = std::fs::File::from(recv_fd(&b).unwrap());
        let mut s = String::new();
        got.read_to_string(&mut s).unwrap();
        assert_eq!(s, "bundle bytes");

        let (r, w) = std::io::pipe().unwrap();
        send_fd(&a, r.as_fd()).unwrap();
        drop(r);
        let mut got = std::fs::File::from(recv_fd(&b).unwrap());
        let mut w = w;
        w.write_all(b"streamed").unwrap();
        drop(w);
        let mut s = String::new();
        got.read_to_string(&mut s).unwrap();
        assert_eq!(s, "streamed");
    }

    #[test]
    fn a_byte_without_a_descriptor_or_a_closed_peer_is_an_error() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"F").unwrap();
        let e = recv_fd(&b).unwrap_err();
        assert!(e.to_string().contains("no file descriptor"), "{e}");
        drop(a);
        let e = recv_fd(&b).unwrap_err();
        assert!(e.to_string().contains("closed the connection"), "{e}");
    }
}
