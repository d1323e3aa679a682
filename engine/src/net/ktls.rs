//! Kernel TLS (Linux's `tls` upper-layer protocol): the crypto-info records of
//! `<linux/tls.h>`, the start-up probe, and the calls that hand a connection's record keys to
//! the kernel.
//!
//! After a handshake done in user space, [`enable`] attaches the `tls` ULP to the socket and
//! gives the kernel each direction's key, IV and record sequence number (`SOL_TLS`, `TLS_TX`,
//! `TLS_RX`); from then on the kernel seals and opens records and the socket's plain reads,
//! writes and sendfile/splice carry plaintext. [`support`] says, once per process, whether the
//! kernel has the ULP and which ciphers it takes, and if not, why: a kernel without the `tls`
//! module refuses `TCP_ULP` with `ENOENT`.

use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use crate::{Error, ErrorKind, Result};

/// `SOL_TLS`: the socket level of the TLS options.
pub const SOL_TLS: i32 = 282;
/// `TCP_ULP`: attaches an upper-layer protocol to a TCP socket.
pub const TCP_ULP: i32 = 31;
/// `TLS_TX`: the transmit direction's crypto info.
pub const TLS_TX: i32 = 1;
/// `TLS_RX`: the receive direction's crypto info.
pub const TLS_RX: i32 = 2;
/// `TLS_GET_RECORD_TYPE`: the control message naming a received record's content type.
pub const TLS_GET_RECORD_TYPE: i32 = 2;
/// `TLS_SET_RECORD_TYPE`: the control message naming a sent record's content type.
pub const TLS_SET_RECORD_TYPE: i32 = 1;

/// A protocol version the kernel seals records for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// TLS 1.2 (`TLS_1_2_VERSION`, 0x0303).
    Tls12,
    /// TLS 1.3 (`TLS_1_3_VERSION`, 0x0304).
    Tls13,
}

impl Version {
    fn code(self) -> u16 {
        match self {
            Version::Tls12 => 0x0303,
            Version::Tls13 => 0x0304,
        }
    }
}

/// An AEAD the kernel seals records with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    /// AES-128-GCM (`TLS_CIPHER_AES_GCM_128`, 51).
    AesGcm128,
    /// AES-256-GCM (`TLS_CIPHER_AES_GCM_256`, 52).
    AesGcm256,
    /// ChaCha20-Poly1305 (`TLS_CIPHER_CHACHA20_POLY1305`, 54).
    Chacha20Poly1305,
}

impl Cipher {
    /// Every cipher the engine hands to the kernel.
    pub const ALL: [Cipher; 3] = [
        Cipher::AesGcm128,
        Cipher::AesGcm256,
        Cipher::Chacha20Poly1305,
    ];

    fn code(self) -> u16 {
        match self {
            Cipher::AesGcm128 => 51,
            Cipher::AesGcm256 => 52,
            Cipher::Chacha20Poly1305 => 54,
        }
    }

    /// The key's length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Cipher::AesGcm128 => 16,
            Cipher::AesGcm256 | Cipher::Chacha20Poly1305 => 32,
        }
    }
}

/// `struct tls_crypto_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CryptoInfoHead {
    /// `TLS_1_2_VERSION` or `TLS_1_3_VERSION`.
    pub version: u16,
    /// `TLS_CIPHER_*`.
    pub cipher_type: u16,
}

/// `struct tls12_crypto_info_aes_gcm_128` (TLS 1.3 uses the same record).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AesGcm128Info {
    /// Version and cipher.
    pub info: CryptoInfoHead,
    /// The nonce's last 8 bytes.
    pub iv: [u8; 8],
    /// The key.
    pub key: [u8; 16],
    /// The nonce's first 4 bytes.
    pub salt: [u8; 4],
    /// The next record's sequence number, big-endian.
    pub rec_seq: [u8; 8],
}

/// `struct tls12_crypto_info_aes_gcm_256`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AesGcm256Info {
    /// Version and cipher.
    pub info: CryptoInfoHead,
    /// The nonce's last 8 bytes.
    pub iv: [u8; 8],
    /// The key.
    pub key: [u8; 32],
    /// The nonce's first 4 bytes.
    pub salt: [u8; 4],
    /// The next record's sequence number, big-endian.
    pub rec_seq: [u8; 8],
}

/// `struct tls12_crypto_info_chacha20_poly1305` (no salt: the whole nonce is the IV).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Chacha20Poly1305Info {
    /// Version and cipher.
    pub info: CryptoInfoHead,
    /// The nonce.
    pub iv: [u8; 12],
    /// The key.
    pub key: [u8; 32],
    /// The next record's sequence number, big-endian.
    pub rec_seq: [u8; 8],
}

/// One direction's record keys, as the TLS library derived them.
#[derive(Clone)]
pub struct DirectionKeys {
    /// The protocol version.
    pub version: Version,
    /// The AEAD.
    pub cipher: Cipher,
    /// The key ([`Cipher::key_len`] bytes).
    pub key: Vec<u8>,
    /// The 12-byte nonce base (TLS 1.2: the implicit salt, then the first explicit nonce).
    pub iv: [u8; 12],
    /// The sequence number of the next record in this direction.
    pub seq: u64,
}

impl fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_struct("DirectionKeys")
            .field("version", &self.version)
            .field("cipher", &self.cipher)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// A crypto-info record ready for `setsockopt(SOL_TLS, TLS_TX | TLS_RX)`.
#[derive(Clone, Copy, Debug)]
pub enum CryptoInfo {
    /// AES-128-GCM.
    AesGcm128(AesGcm128Info),
    /// AES-256-GCM.
    AesGcm256(AesGcm256Info),
    /// ChaCha20-Poly1305.
    Chacha20Poly1305(Chacha20Poly1305Info),
}

impl DirectionKeys {
    /// The kernel's record for these keys; `InvalidInput` if the key is not the cipher's size.
    pub fn crypto_info(&self) -> Result<CryptoInfo> {
        if self.key.len() != self.cipher.key_len() {
            return Err(Error::new(ErrorKind::InvalidInput, "ktls key length"));
        }
        let info = CryptoInfoHead {
            version: self.version.code(),
            cipher_type: self.cipher.code(),
        };
        let rec_seq = self.seq.to_be_bytes();
        let (salt, iv) = self.iv.split_at(4);
        let mut iv8 = [0u8; 8];
        iv8.copy_from_slice(iv);
        let mut salt4 = [0u8; 4];
        salt4.copy_from_slice(salt);
        Ok(match self.cipher {
            Cipher::AesGcm128 => {
                let mut key = [0u8; 16];
                key.copy_from_slice(&self.key);
                CryptoInfo::AesGcm128(AesGcm128Info {
                    info,
                    iv: iv8,
                    key,
                    salt: salt4,
                    rec_seq,
                })
            }
            Cipher::AesGcm256 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&self.key);
                CryptoInfo::AesGcm256(AesGcm256Info {
                    info,
                    iv: iv8,
                    key,
                    salt: salt4,
                    rec_seq,
                })
            }
            Cipher::Chacha20Poly1305 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&self.key);
                CryptoInfo::Chacha20Poly1305(Chacha20Poly1305Info {
                    info,
                    iv: self.iv,
                    key,
                    rec_seq,
                })
            }
        })
    }
}

impl CryptoInfo {
    /// Sets this record as `direction` (`TLS_TX` or `TLS_RX`) of `fd`.
    fn install(&self, fd: i32, direction: i32) -> Result<()> {
        match self {
            CryptoInfo::AesGcm128(i) => set_option(fd, SOL_TLS, direction, i, "setsockopt TLS"),
            CryptoInfo::AesGcm256(i) => set_option(fd, SOL_TLS, direction, i, "setsockopt TLS"),
            CryptoInfo::Chacha20Poly1305(i) => {
                set_option(fd, SOL_TLS, direction, i, "setsockopt TLS")
            }
        }
    }
}

/// `setsockopt(fd, level, name, value)` for a plain-data `value`.
fn set_option<T: Copy>(fd: i32, level: i32, name: i32, value: &T, op: &'static str) -> Result<()> {
    // SAFETY: `value` is a live, initialised `T` (a `#[repr(C)]` record or a byte array) and the
    // length passed is its size: the kernel reads exactly those bytes and keeps no pointer.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::last_os(op))
    }
}

/// Attaches the `tls` ULP to `socket`, a connected TCP socket whose handshake is done and
/// whose unread bytes were all taken by the TLS library (the kernel decrypts from the next
/// record on). A kernel without the module fails with `NotFound` (ENOENT); one that does not
/// take a cipher fails on its direction. The socket is unusable for TLS in user space once
/// this succeeded half way: on error, close it.
pub fn enable(socket: &impl AsRawFd, tx: &DirectionKeys, rx: &DirectionKeys) -> Result<()> {
    let fd = socket.as_raw_fd();
    let (tx, rx) = (tx.crypto_info()?, rx.crypto_info()?);
    attach_ulp(fd)?;
    tx.install(fd, TLS_TX)?;
    rx.install(fd, TLS_RX)
}

fn attach_ulp(fd: i32) -> Result<()> {
    set_option(fd, libc::SOL_TCP, TCP_ULP, b"tls", "setsockopt TCP_ULP")
}

/// What the kernel offers for TLS offload (see [`support`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KtlsSupport {
    /// Whether `TCP_ULP` "tls" attaches; if not, why (`ENOENT`: the kernel has no `tls`
    /// module).
    pub ulp: std::result::Result<(), String>,
    /// Each cipher and whether the kernel took it for a TLS 1.3 transmit direction.
    pub ciphers: Vec<(Cipher, bool)>,
}

impl KtlsSupport {
    /// Whether connections using `cipher` can be offloaded.
    pub fn offloads(&self, cipher: Cipher) -> bool {
        self.ulp.is_ok() && self.ciphers.iter().any(|(c, ok)| *c == cipher && *ok)
    }
}

impl fmt::Display for KtlsSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ulp {
            Err(why) => write!(f, "kernel TLS: unavailable ({why}); TLS runs in user space"),
            Ok(()) => {
                let taken: Vec<String> = self
                    .ciphers
                    .iter()
                    .filter(|(_, ok)| *ok)
                    .map(|(c, _)| format!("{c:?}"))
                    .collect();
                write!(
                    f,
                    "kernel TLS: tls ULP present; ciphers {}",
                    taken.join(", ")
                )
            }
        }
    }
}

/// What this kernel offers for TLS offload, probed once per process on a loopback connection
/// of its own: the `tls` ULP attached, then each cipher tried as a transmit direction (with
/// keys that protect nothing: the connection is closed right after).
pub fn support() -> &'static KtlsSupport {
    static SUPPORT: OnceLock<KtlsSupport> = OnceLock::new();
    SUPPORT.get_or_init(probe)
}

fn probe() -> KtlsSupport {
    let unavailable = |why: String| KtlsSupport {
        ulp: Err(why),
        ciphers: Cipher::ALL.iter().map(|c| (*c, false)).collect(),
    };
    let connected = || -> std::io::Result<(std::net::TcpStream, std::net::TcpStream)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        Ok((client, server))
    };
    // A fresh connection per cipher: a direction is set once per socket.
    let mut ciphers = Vec::new();
    for cipher in Cipher::ALL {
        let (client, _server) = match connected() {
            Ok(pair) => pair,
            Err(e) => return unavailable(format!("no loopback connection to probe on: {e}")),
        };
        if let Err(e) = attach_ulp(client.as_raw_fd()) {
            let why = match e.raw_os_error() {
                Some(libc::ENOENT) => "setsockopt TCP_ULP \"tls\": ENOENT, no tls module".into(),
                _ => format!("setsockopt TCP_ULP \"tls\": {e}"),
            };
            return unavailable(why);
        }
        let keys = DirectionKeys {
            version: Version::Tls13,
            cipher,
            key: vec![0x5a; cipher.key_len()],
            iv: [0; 12],
            seq: 0,
        };
        let taken = keys
            .crypto_info()
            .and_then(|info| info.install(client.as_raw_fd(), TLS_TX))
            .is_ok();
        ciphers.push((cipher, taken));
    }
    KtlsSupport {
        ulp: Ok(()),
        ciphers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cipher: Cipher) -> DirectionKeys {
        DirectionKeys {
            version: Version::Tls13,
            cipher,
            key: (0..cipher.key_len() as u8).collect(),
            iv: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            seq: 0x0102_0304_0506_0708,
        }
    }

    #[test]
    fn records_split_the_nonce_as_the_kernel_expects() {
        let CryptoInfo::AesGcm256(gcm) = keys(Cipher::AesGcm256).crypto_info().unwrap() else {
            panic!("another record");
        };
        assert_eq!((gcm.info.version, gcm.info.cipher_type), (0x0304, 52));
        assert_eq!(gcm.salt, [0, 1, 2, 3]);
        assert_eq!(gcm.iv, [4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(gcm.rec_seq, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(gcm.key[31], 31);
        let CryptoInfo::Chacha20Poly1305(chacha) =
            keys(Cipher::Chacha20Poly1305).crypto_info().unwrap()
        else {
            panic!("another record");
        };
        assert_eq!(chacha.info.cipher_type, 54);
        assert_eq!(chacha.iv, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let mut short = keys(Cipher::AesGcm128);
        short.key.pop();
        assert_eq!(
            short.crypto_info().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn the_key_material_is_not_printed() {
        let text = format!("{:?}", keys(Cipher::AesGcm128));
        assert!(!text.contains("key:"), "{text}");
    }

    #[test]
    fn the_probe_says_what_this_kernel_offers() {
        let support = support();
        // Either the module is there and attaches, or the reason is given; the report says
        // the same either way.
        let text = support.to_string();
        match &support.ulp {
            Ok(()) => assert!(text.contains("tls ULP present"), "{text}"),
            Err(why) => {
                assert!(text.contains(why.as_str()), "{text}");
                assert!(Cipher::ALL.iter().all(|c| !support.offloads(*c)));
            }
        }
    }

    #[test]
    fn enabling_without_the_module_fails_with_its_reason_and_changes_nothing() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let result = enable(&client, &keys(Cipher::AesGcm128), &keys(Cipher::AesGcm128));
        if support().ulp.is_err() {
            let e = result.unwrap_err();
            assert_eq!(e.op(), "setsockopt TCP_ULP");
            // The socket still carries plain bytes: the caller goes on in user space.
            use std::io::{Read, Write};
            (&client).write_all(b"still plain").unwrap();
            let mut got = [0u8; 11];
            server.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"still plain");
        } else {
            result.unwrap();
        }
    }
}
