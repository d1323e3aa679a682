//! Connect tokens: what a web backend or matchmaker gives a client so that it may connect.
//!
//! A token has a public part the client reads (server addresses, its two packet keys, the
//! timeout) and a private part sealed under the server's private key with
//! XChaCha20-Poly1305, which the client forwards in its connection request without being able
//! to read or change it. [`TokenIssuer`] makes them; [`ConnectToken::to_bytes`] and
//! [`ConnectToken::parse`] carry them as the standard's 2,048 bytes.

use std::net::SocketAddr;

use super::VERSION_INFO;
use super::crypto::{self, KEY_BYTES, Key, MAC_BYTES, NONCE_BYTES};
use super::wire::{MAX_SERVER_ADDRESSES, Reader, Writer};

/// Bytes of a connect token as the client receives it.
pub const CONNECT_TOKEN_BYTES: usize = 2048;
/// Bytes of the sealed private part.
pub const PRIVATE_TOKEN_BYTES: usize = 1024;
/// Bytes of the user data a token carries to the server.
pub const USER_DATA_BYTES: usize = 256;

/// Why a token could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A token names between 1 and 32 server addresses.
    #[error("a connect token names 1 to 32 server addresses, not {0}")]
    AddressCount(usize),
    /// The bytes are not a connect token of this version.
    #[error("not a netcode 1.02 connect token")]
    Version,
    /// A field is cut short or holds a value the standard does not allow.
    #[error("malformed connect token")]
    Malformed,
    /// The private part was not sealed under this key, protocol id and expiry.
    #[error("the private connect token does not open under this key")]
    Forged,
}

/// A connect token, public part and sealed private part.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectToken {
    /// The game or application's protocol id.
    pub protocol_id: u64,
    /// Seconds since the Unix epoch when the token was made.
    pub create_timestamp: u64,
    /// Seconds since the Unix epoch after which servers refuse it.
    pub expire_timestamp: u64,
    /// The private part's nonce.
    pub nonce: [u8; NONCE_BYTES],
    /// The sealed private part, forwarded unread in the connection request.
    pub private_data: Box<[u8; PRIVATE_TOKEN_BYTES]>,
    /// Seconds without a packet before either side gives up; negative: never (development).
    pub timeout_seconds: i32,
    /// Servers to try, in order.
    pub server_addresses: Vec<SocketAddr>,
    /// The key of packets the client sends.
    pub client_to_server_key: Key,
    /// The key of packets the server sends.
    pub server_to_client_key: Key,
}

impl std::fmt::Debug for ConnectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectToken")
            .field("protocol_id", &self.protocol_id)
            .field("create_timestamp", &self.create_timestamp)
            .field("expire_timestamp", &self.expire_timestamp)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("server_addresses", &self.server_addresses)
            .finish_non_exhaustive()
    }
}

impl ConnectToken {
    /// The standard's 2,048-byte encoding, zero padded.
    pub fn to_bytes(&self) -> Box<[u8; CONNECT_TOKEN_BYTES]> {
        let mut out = Box::new([0u8; CONNECT_TOKEN_BYTES]);
        let mut w = Writer::new(&mut out[..]);
        w.put(VERSION_INFO);
        w.u64(self.protocol_id);
        w.u64(self.create_timestamp);
        w.u64(self.expire_timestamp);
        w.put(&self.nonce);
        w.put(&self.private_data[..]);
        w.i32(self.timeout_seconds);
        w.addresses(&self.server_addresses);
        w.put(&self.client_to_server_key.0);
        w.put(&self.server_to_client_key.0);
        out
    }

    /// Reads the standard's encoding (at least the fields; padding is not checked).
    pub fn parse(bytes: &[u8]) -> Result<ConnectToken, TokenError> {
        let mut r = Reader::new(bytes);
        let malformed = |_| TokenError::Malformed;
        if r.take(VERSION_INFO.len()).map_err(malformed)? != VERSION_INFO {
            return Err(TokenError::Version);
        }
        let protocol_id = r.u64().map_err(malformed)?;
        let create_timestamp = r.u64().map_err(malformed)?;
        let expire_timestamp = r.u64().map_err(malformed)?;
        let nonce = r.array().map_err(malformed)?;
        let private_data = Box::new(r.array().map_err(malformed)?);
        let timeout_seconds = r.i32().map_err(malformed)?;
        let server_addresses = r.addresses().map_err(malformed)?;
        let client_to_server_key = Key(r.array().map_err(malformed)?);
        let server_to_client_key = Key(r.array().map_err(malformed)?);
        Ok(ConnectToken {
            protocol_id,
            create_timestamp,
            expire_timestamp,
            nonce,
            private_data,
            timeout_seconds,
            server_addresses,
            client_to_server_key,
            server_to_client_key,
        })
    }
}

/// Makes connect tokens for one protocol id under one private key: what a matchmaker or web
/// backend runs, holding the same key as the servers.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    protocol_id: u64,
    key: Key,
}

/// What one token says about its client.
#[derive(Clone, Debug)]
pub struct TokenRequest<'a> {
    /// The client's globally unique id.
    pub client_id: u64,
    /// Servers the client may connect to, tried in order (1 to 32).
    pub server_addresses: &'a [SocketAddr],
    /// Seconds from issue until servers refuse the token.
    pub expire_seconds: u64,
    /// Seconds without a packet before either side gives up (negative: never).
    pub timeout_seconds: i32,
    /// Passed to the server with the connection; zeros if `None`.
    pub user_data: Option<&'a [u8; USER_DATA_BYTES]>,
}

impl TokenIssuer {
    /// An issuer for `protocol_id` sealing under `key`.
    pub fn new(protocol_id: u64, key: Key) -> Self {
        TokenIssuer { protocol_id, key }
    }

    /// A token for `request`, made at `unix_seconds`, with fresh random packet keys and nonce.
    pub fn issue(
        &self,
        unix_seconds: u64,
        request: &TokenRequest<'_>,
    ) -> Result<ConnectToken, TokenError> {
        self.issue_with(
            unix_seconds,
            request,
            crypto::random_bytes(),
            Key::random(),
            Key::random(),
        )
    }

    /// [`issue`](Self::issue) with the nonce and packet keys given (known-answer tests, and
    /// backends with their own random source). A nonce must never repeat under one key.
    pub fn issue_with(
        &self,
        unix_seconds: u64,
        request: &TokenRequest<'_>,
        nonce: [u8; NONCE_BYTES],
        client_to_server_key: Key,
        server_to_client_key: Key,
    ) -> Result<ConnectToken, TokenError> {
        let count = request.server_addresses.len();
        if count == 0 || count > MAX_SERVER_ADDRESSES {
            return Err(TokenError::AddressCount(count));
        }
        let expire_timestamp = unix_seconds.saturating_add(request.expire_seconds);
        let private = PrivateToken {
            client_id: request.client_id,
            timeout_seconds: request.timeout_seconds,
            server_addresses: request.server_addresses.to_vec(),
            client_to_server_key: client_to_server_key.clone(),
            server_to_client_key: server_to_client_key.clone(),
            user_data: Box::new(*request.user_data.unwrap_or(&[0; USER_DATA_BYTES])),
        };
        let private_data = private.seal(self.protocol_id, expire_timestamp, &nonce, &self.key);
        Ok(ConnectToken {
            protocol_id: self.protocol_id,
            create_timestamp: unix_seconds,
            expire_timestamp,
            nonce,
            private_data,
            timeout_seconds: request.timeout_seconds,
            server_addresses: private.server_addresses,
            client_to_server_key,
            server_to_client_key,
        })
    }
}

/// The private part, as the server reads it once it has opened the seal.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PrivateToken {
    /// The client's id.
    pub client_id: u64,
    /// Seconds without a packet before the server drops the client (negative: never).
    pub timeout_seconds: i32,
    /// The servers this token is good for.
    pub server_addresses: Vec<SocketAddr>,
    /// The key of packets the client sends.
    pub client_to_server_key: Key,
    /// The key of packets the server sends.
    pub server_to_client_key: Key,
    /// The backend's data for the server.
    pub user_data: Box<[u8; USER_DATA_BYTES]>,
}

impl PrivateToken {
    /// Writes and seals the private part.
    fn seal(
        &self,
        protocol_id: u64,
        expire_timestamp: u64,
        nonce: &[u8; NONCE_BYTES],
        key: &Key,
    ) -> Box<[u8; PRIVATE_TOKEN_BYTES]> {
        let mut out = Box::new([0u8; PRIVATE_TOKEN_BYTES]);
        let mut w = Writer::new(&mut out[..PRIVATE_TOKEN_BYTES - MAC_BYTES]);
        w.u64(self.client_id);
        w.i32(self.timeout_seconds);
        w.addresses(&self.server_addresses);
        w.put(&self.client_to_server_key.0);
        w.put(&self.server_to_client_key.0);
        w.put(&self.user_data[..]);
        crypto::seal_x(
            &mut out[..],
            nonce,
            key,
            &token_aad(protocol_id, expire_timestamp),
        );
        out
    }

    /// Opens a sealed private part (a copy: the sealed bytes stay as they were).
    pub fn open(
        sealed: &[u8; PRIVATE_TOKEN_BYTES],
        protocol_id: u64,
        expire_timestamp: u64,
        nonce: &[u8; NONCE_BYTES],
        key: &Key,
    ) -> Result<PrivateToken, TokenError> {
        let mut plain = *sealed;
        crypto::open_x(
            &mut plain,
            nonce,
            key,
            &token_aad(protocol_id, expire_timestamp),
        )
        .map_err(|_| TokenError::Forged)?;
        let mut r = Reader::new(&plain[..PRIVATE_TOKEN_BYTES - MAC_BYTES]);
        let malformed = |_| TokenError::Malformed;
        Ok(PrivateToken {
            client_id: r.u64().map_err(malformed)?,
            timeout_seconds: r.i32().map_err(malformed)?,
            server_addresses: r.addresses().map_err(malformed)?,
            client_to_server_key: Key(r.array::<KEY_BYTES>().map_err(malformed)?),
            server_to_client_key: Key(r.array::<KEY_BYTES>().map_err(malformed)?),
            user_data: Box::new(r.array().map_err(malformed)?),
        })
    }
}

/// The private part's associated data: version, protocol id, expiry.
fn token_aad(protocol_id: u64, expire_timestamp: u64) -> [u8; 29] {
    let mut aad = [0; 29];
    aad[..13].copy_from_slice(VERSION_INFO);
    aad[13..21].copy_from_slice(&protocol_id.to_le_bytes());
    aad[21..].copy_from_slice(&expire_timestamp.to_le_bytes());
    aad
}

/// 32 addresses of IPv6 fill the private part to within its tag: the largest token fits.
const _: () = assert!(
    8 + 4 + 4 + MAX_SERVER_ADDRESSES * 19 + 2 * KEY_BYTES + USER_DATA_BYTES
        <= PRIVATE_TOKEN_BYTES - MAC_BYTES
);
const _: () = assert!(
    13 + 3 * 8
        + NONCE_BYTES
        + PRIVATE_TOKEN_BYTES
        + 4
        + 4
        + MAX_SERVER_ADDRESSES * 19
        + 2 * KEY_BYTES
        <= CONNECT_TOKEN_BYTES
);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(addrs: &[SocketAddr]) -> TokenRequest<'_> {
        TokenRequest {
            client_id: 0x1122_3344_5566_7788,
            server_addresses: addrs,
            expire_seconds: 30,
            timeout_seconds: 5,
            user_data: Some(&[0xab; USER_DATA_BYTES]),
        }
    }

    #[test]
    fn a_token_round_trips_and_its_private_part_opens_only_under_the_key() {
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:40000".parse().unwrap()];
        let issuer = TokenIssuer::new(7, Key([1; 32]));
        let token = issuer.issue(1_000, &request(&addrs)).unwrap();
        let bytes = token.to_bytes();
        let parsed = ConnectToken::parse(&bytes[..]).unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.expire_timestamp, 1_030);

        let private = PrivateToken::open(
            &parsed.private_data,
            7,
            parsed.expire_timestamp,
            &parsed.nonce,
            &Key([1; 32]),
        )
        .unwrap();
        assert_eq!(private.client_id, 0x1122_3344_5566_7788);
        assert_eq!(private.server_addresses, addrs);
        assert_eq!(private.client_to_server_key, token.client_to_server_key);
        assert_eq!(private.user_data[..], [0xab; USER_DATA_BYTES]);

        for (protocol, expire, key) in [(8, 1_030, 1), (7, 1_031, 1), (7, 1_030, 2)] {
            let opened = PrivateToken::open(
                &parsed.private_data,
                protocol,
                expire,
                &parsed.nonce,
                &Key([key; 32]),
            );
            assert_eq!(opened, Err(TokenError::Forged));
        }
    }

    #[test]
    fn the_largest_token_fits_and_bad_ones_are_refused() {
        let addrs: Vec<SocketAddr> = (0..32)
            .map(|i| format!("[2001:db8::{i}]:{}", 1000 + i).parse().unwrap())
            .collect();
        let issuer = TokenIssuer::new(7, Key([1; 32]));
        let token = issuer.issue(0, &request(&addrs)).unwrap();
        assert_eq!(ConnectToken::parse(&token.to_bytes()[..]).unwrap(), token);

        let too_many: Vec<SocketAddr> = [addrs.clone(), addrs].concat();
        assert_eq!(
            issuer.issue(0, &request(&too_many)).unwrap_err(),
            TokenError::AddressCount(64)
        );
        assert_eq!(
            issuer.issue(0, &request(&[])).unwrap_err(),
            TokenError::AddressCount(0)
        );

        let mut bytes = token.to_bytes();
        bytes[3] = b'X';
        assert_eq!(ConnectToken::parse(&bytes[..]), Err(TokenError::Version));
        assert_eq!(
            ConnectToken::parse(&token.to_bytes()[..100]),
            Err(TokenError::Malformed)
        );
    }
}
