//! TLS (https and wss) with rustls, driven non-blocking inside the shard.
//!
//! [`TlsStream`] is a [`Transport`]: reading pulls TLS records from the socket until rustls has
//! plaintext (or the socket would block); writing hands plaintext to rustls and pushes the
//! records it makes to the socket. Records the socket cannot take yet stay inside rustls
//! (bounded by its 64 KiB buffer limit) and go out on the next writable event, so a TLS session
//! flushes exactly like a plain one.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::error::TlsError;
use crate::session::Transport;

/// Loads the certificate chain and key and builds the server configuration (TLS 1.2 and 1.3,
/// HTTP/1.1 only: WebSocket upgrades need it).
pub fn load_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate(files.cert.clone(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate(
            files.cert.clone(),
            "no certificate found".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Key(files.key.clone(), e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS connection over a non-blocking socket.
pub struct TlsStream {
    sock: TcpStream,
    conn: ServerConnection,
    /// Send FIN once the records still held (the close_notify) have left.
    fin_pending: bool,
}

impl TlsStream {
    /// Starts a server-side TLS connection on `sock`.
    pub fn new(sock: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream {
            sock,
            conn,
            fin_pending: false,
        })
    }

    /// The socket, for registering with a poll.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    /// Writes held records until none are left (`true`) or the socket is full (`false`).
    fn write_records(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.fin_pending {
            self.fin_pending = false;
            self.sock.shutdown(std::net::Shutdown::Write)?;
        }
        Ok(true)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Plaintext rustls already decrypted comes first.
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n), // 0: the peer sent close_notify
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the peer why (an alert), then give up on the connection.
                let _ = self.write_records();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages rustls wants to send leave now; if the socket is full they
            // wait for the next flush.
            if self.conn.wants_write() {
                self.write_records()?;
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    /// Takes plaintext until it is all taken or the socket is full. rustls accepts at most
    /// its buffer limit per call, so a short count here must mean "the socket is full" (the
    /// outbound queue then waits for a writable event), never just "rustls had enough".
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut taken = 0;
        for buf in bufs {
            let mut at = 0;
            while at < buf.len() {
                if !self.write_records()? {
                    return if taken == 0 {
                        Err(io::ErrorKind::WouldBlock.into())
                    } else {
                        Ok(taken)
                    };
                }
                let n = self.conn.writer().write(&buf[at..])?;
                if n == 0 {
                    // Nothing fits while rustls still holds records the socket refused.
                    return if taken == 0 {
                        Err(io::ErrorKind::WouldBlock.into())
                    } else {
                        Ok(taken)
                    };
                }
                at += n;
                taken += n;
            }
        }
        self.write_records()?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for TlsStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.fin_pending = true;
        self.write_records().map(|_| ())
    }

    fn has_pending_output(&self) -> bool {
        self.conn.wants_write() || self.fin_pending
    }

    fn flush_pending(&mut self) -> io::Result<bool> {
        self.write_records()
    }
}

/// A client connection as a shard holds it: plain or TLS.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream>),
}

impl Conn {
    /// A plain connection, or a TLS one when `tls` is given.
    pub fn new(sock: TcpStream, tls: Option<&Arc<rustls::ServerConfig>>) -> io::Result<Conn> {
        Ok(match tls {
            None => Conn::Plain(sock),
            Some(config) => Conn::Tls(Box::new(TlsStream::new(sock, config.clone())?)),
        })
    }

    /// The socket, for registering with a poll.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => t.socket_mut(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write_vectored(bufs),
            Conn::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Conn {
    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown_write(),
            Conn::Tls(t) => t.shutdown_write(),
        }
    }

    fn has_pending_output(&self) -> bool {
        match self {
            Conn::Plain(_) => false,
            Conn::Tls(t) => t.has_pending_output(),
        }
    }

    fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Conn::Plain(_) => Ok(true),
            Conn::Tls(t) => t.flush_pending(),
        }
    }
}
