//! The kernel TLS records against the kernel's own header: a C program built here with the
//! system compiler prints each record's size and field offsets and each constant from
//! `<linux/tls.h>`, `<linux/tcp.h>` and `<sys/socket.h>`, and ours must agree.
#![cfg(target_os = "linux")]

use std::mem::{offset_of, size_of};
use std::process::Command;

use coring::net::ktls::{self, AesGcm128Info, AesGcm256Info, Chacha20Poly1305Info, CryptoInfoHead};

const PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <linux/tcp.h>
#include <linux/tls.h>
#define REC(t) printf(#t " %zu %zu %zu %zu %zu\n", sizeof(struct t), offsetof(struct t, iv), \
    offsetof(struct t, key), offsetof(struct t, salt), offsetof(struct t, rec_seq))
int main(void) {
    printf("tls_crypto_info %zu %zu %zu\n", sizeof(struct tls_crypto_info),
        offsetof(struct tls_crypto_info, version), offsetof(struct tls_crypto_info, cipher_type));
    REC(tls12_crypto_info_aes_gcm_128);
    REC(tls12_crypto_info_aes_gcm_256);
    REC(tls12_crypto_info_chacha20_poly1305);
    printf("constants %d %d %d %d %d %d %d %d %d %d %d\n", SOL_TLS, TCP_ULP, TLS_TX, TLS_RX,
        TLS_GET_RECORD_TYPE, TLS_SET_RECORD_TYPE, TLS_1_2_VERSION, TLS_1_3_VERSION,
        TLS_CIPHER_AES_GCM_128, TLS_CIPHER_AES_GCM_256, TLS_CIPHER_CHACHA20_POLY1305);
    return 0;
}
"#;

/// The C program's lines, by their first word.
fn kernel_layout() -> Vec<(String, Vec<usize>)> {
    let dir = std::env::temp_dir().join(format!("coring-ktls-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (source, binary) = (dir.join("layout.c"), dir.join("layout"));
    std::fs::write(&source, PROGRAM).unwrap();
    let built = Command::new("cc")
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("a C compiler (cc) and the kernel headers (linux-libc-dev)");
    assert!(
        built.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let out = Command::new(&binary).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap().to_owned();
            (name, words.map(|w| w.parse().unwrap()).collect())
        })
        .collect()
}

#[test]
fn our_records_and_constants_are_the_kernels() {
    let kernel = kernel_layout();
    let of = |name: &str| {
        kernel
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} missing from {kernel:?}"))
    };
    assert_eq!(
        of("tls_crypto_info"),
        [
            size_of::<CryptoInfoHead>(),
            offset_of!(CryptoInfoHead, version),
            offset_of!(CryptoInfoHead, cipher_type)
        ]
    );
    macro_rules! record {
        ($t:ty) => {
            [
                size_of::<$t>(),
                offset_of!($t, iv),
                offset_of!($t, key),
                offset_of!($t, salt),
                offset_of!($t, rec_seq),
            ]
        };
    }
    assert_eq!(of("tls12_crypto_info_aes_gcm_128"), record!(AesGcm128Info));
    assert_eq!(of("tls12_crypto_info_aes_gcm_256"), record!(AesGcm256Info));
    // ChaCha20-Poly1305 has no salt: its offset is where the key ends.
    let chacha = of("tls12_crypto_info_chacha20_poly1305");
    assert_eq!(
        chacha,
        [
            size_of::<Chacha20Poly1305Info>(),
            offset_of!(Chacha20Poly1305Info, iv),
            offset_of!(Chacha20Poly1305Info, key),
            offset_of!(Chacha20Poly1305Info, rec_seq),
            offset_of!(Chacha20Poly1305Info, rec_seq),
        ]
    );
    let head = |cipher| {
        let keys = ktls::DirectionKeys {
            version: ktls::Version::Tls13,
            cipher,
            key: vec![0; ktls::Cipher::key_len(cipher)],
            iv: [0; 12],
            seq: 0,
        };
        match keys.crypto_info().unwrap() {
            ktls::CryptoInfo::AesGcm128(i) => i.info,
            ktls::CryptoInfo::AesGcm256(i) => i.info,
            ktls::CryptoInfo::Chacha20Poly1305(i) => i.info,
        }
    };
    let tls12 = ktls::DirectionKeys {
        version: ktls::Version::Tls12,
        cipher: ktls::Cipher::AesGcm128,
        key: vec![0; 16],
        iv: [0; 12],
        seq: 0,
    };
    let ktls::CryptoInfo::AesGcm128(tls12) = tls12.crypto_info().unwrap() else {
        panic!("another record");
    };
    assert_eq!(
        of("constants"),
        [
            ktls::SOL_TLS as usize,
            ktls::TCP_ULP as usize,
            ktls::TLS_TX as usize,
            ktls::TLS_RX as usize,
            ktls::TLS_GET_RECORD_TYPE as usize,
            ktls::TLS_SET_RECORD_TYPE as usize,
            tls12.info.version as usize,
            head(ktls::Cipher::AesGcm128).version as usize,
            head(ktls::Cipher::AesGcm128).cipher_type as usize,
            head(ktls::Cipher::AesGcm256).cipher_type as usize,
            head(ktls::Cipher::Chacha20Poly1305).cipher_type as usize,
        ]
    );
}
