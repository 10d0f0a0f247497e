//! The connection's security upgrade: Noise XX with the network key's prologue (see
//! `admission_prologue` in `net`), offering AES-256-GCM first.
//!
//! Chunks travel as AEAD ciphertext already, but the transport cipher still hides which chunk
//! ids, entries and requests pass between which nodes, so every byte stays encrypted. What
//! changed is the cipher: where the CPU has AES instructions, ring's AES-256-GCM runs about 4x
//! faster than ChaCha20-Poly1305 (measured in `bench/profile`), and the vendored libp2p-noise's
//! AES variant seals and opens messages in place. The handshake (pattern, DH, identity binding,
//! prologue) is the same; only the protocol name (`/p2pfs/noise-aesgcm/1`) and the cipher
//! differ. Mixed versions: multistream-select offers the AES variant first and standard
//! `/noise` second, so a node without it negotiates `/noise` (one more round trip in the
//! handshake), and this node accepts both.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::futures::{AsyncRead, AsyncWrite, Future, FutureExt};
use libp2p::{PeerId, noise};

/// The transport ciphers, as labels: index 0 AES-256-GCM, 1 ChaCha20-Poly1305.
pub const CIPHERS: [&str; 2] = ["aes-256-gcm", "chacha20-poly1305"];

/// Connections secured so far, per cipher (process-wide; the metrics export reads it).
pub struct SecuredCounters([AtomicU64; 2]);

impl SecuredCounters {
    const fn new() -> Self {
        SecuredCounters([AtomicU64::new(0), AtomicU64::new(0)])
    }

    fn count(&self, protocol: &str) {
        let i = usize::from(protocol != noise::PROTOCOL_AES_GCM);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections secured with `CIPHERS[i]`.
    pub fn with(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::Relaxed)
    }
}

pub static SECURED: SecuredCounters = SecuredCounters::new();

/// Noise with the prologue; offers AES-256-GCM unless `aes_gcm` is false (what nodes without
/// it do: tests of mixed versions build such a node).
#[derive(Clone)]
pub struct Secure(noise::Config);

impl Secure {
    pub fn new(
        keypair: &libp2p::identity::Keypair,
        prologue: Vec<u8>,
        aes_gcm: bool,
    ) -> Result<Self, noise::Error> {
        let config = noise::Config::new(keypair)?.with_prologue(prologue);
        Ok(Secure(if aes_gcm {
            config.with_aes_gcm()
        } else {
            config
        }))
    }
}

impl UpgradeInfo for Secure {
    type Info = <noise::Config as UpgradeInfo>::Info;
    type InfoIter = <noise::Config as UpgradeInfo>::InfoIter;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.protocol_info()
    }
}

type Secured<T> = (PeerId, noise::Output<T>);
type Upgrading<T> = Pin<Box<dyn Future<Output = Result<Secured<T>, noise::Error>> + Send>>;

fn counted<T>(result: Result<Secured<T>, noise::Error>) -> Result<Secured<T>, noise::Error> {
    if let Ok((_, output)) = &result {
        SECURED.count(output.protocol());
    }
    result
}

impl<T> InboundConnectionUpgrade<T> for Secure
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = Secured<T>;
    type Error = noise::Error;
    type Future = Upgrading<T>;

    fn upgrade_inbound(self, socket: T, info: Self::Info) -> Self::Future {
        self.0.upgrade_inbound(socket, info).map(counted).boxed()
    }
}

impl<T> OutboundConnectionUpgrade<T> for Secure
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = Secured<T>;
    type Error = noise::Error;
    type Future = Upgrading<T>;

    fn upgrade_outbound(self, socket: T, info: Self::Info) -> Self::Future {
        self.0.upgrade_outbound(socket, info).map(counted).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::{AsyncReadExt, AsyncWriteExt};
    use multistream_select::{Version, dialer_select_proto, listener_select_proto};
    use tokio_util::compat::TokioAsyncReadCompatExt;

    /// Negotiates and runs the handshake between a dialer and a listener, each offering the
    /// AES variant or not, over an in-memory pipe; then sends 300 KB each way. Returns what
    /// each side negotiated.
    async fn connect(dialer_aes: bool, listener_aes: bool) -> (&'static str, &'static str) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let prologue = b"p2pfs test network".to_vec();
        let dialer = Secure::new(
            &libp2p::identity::Keypair::generate_ed25519(),
            prologue.clone(),
            dialer_aes,
        )
        .unwrap();
        let listener = Secure::new(
            &libp2p::identity::Keypair::generate_ed25519(),
            prologue,
            listener_aes,
        )
        .unwrap();
        let dial = async {
            let (info, io) = dialer_select_proto(a.compat(), dialer.protocol_info(), Version::V1)
                .await
                .unwrap();
            dialer.upgrade_outbound(io, info).await.unwrap()
        };
        let listen = async {
            let (info, io) = listener_select_proto(b.compat(), listener.protocol_info())
                .await
                .unwrap();
            listener.upgrade_inbound(io, info).await.unwrap()
        };
        let ((_, mut out), (_, mut inb)) = tokio::join!(dial, listen);
        let (kinds, payload) = (
            (out.protocol(), inb.protocol()),
            (0..300_000u32)
                .map(|i| (i % 253) as u8)
                .collect::<Vec<u8>>(),
        );
        for outbound_sends in [true, false] {
            let (from, to) = if outbound_sends {
                (&mut out, &mut inb)
            } else {
                (&mut inb, &mut out)
            };
            let send = async {
                from.write_all(&payload).await.unwrap();
                from.flush().await.unwrap();
            };
            let mut got = vec![0u8; payload.len()];
            let recv = async { to.read_exact(&mut got).await.unwrap() };
            tokio::join!(send, recv);
            assert!(got == payload, "bytes changed in transit");
        }
        kinds
    }

    /// Two nodes of this version use AES-256-GCM; a node offering standard Noise only (an
    /// older version) is still connected, over ChaCha20-Poly1305, whichever side dials.
    #[tokio::test]
    async fn new_pairs_use_aes_gcm_and_older_nodes_still_connect() {
        let aes = noise::PROTOCOL_AES_GCM;
        let chacha = noise::PROTOCOL_CHACHA;
        assert_eq!(connect(true, true).await, (aes, aes));
        assert_eq!(connect(true, false).await, (chacha, chacha));
        assert_eq!(connect(false, true).await, (chacha, chacha));
        assert_eq!(connect(false, false).await, (chacha, chacha));
    }

    /// The prologue (the network key) still gates the AES variant: a node of another network
    /// fails the handshake.
    #[tokio::test]
    async fn the_aes_variant_refuses_another_networks_prologue() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let dialer = Secure::new(
            &libp2p::identity::Keypair::generate_ed25519(),
            b"network one".to_vec(),
            true,
        )
        .unwrap();
        let listener = Secure::new(
            &libp2p::identity::Keypair::generate_ed25519(),
            b"network two".to_vec(),
            true,
        )
        .unwrap();
        let dial = async {
            let (info, io) = dialer_select_proto(a.compat(), dialer.protocol_info(), Version::V1)
                .await
                .unwrap();
            assert_eq!(info, noise::PROTOCOL_AES_GCM);
            dialer.upgrade_outbound(io, info).await.map(|_| ())
        };
        let listen = async {
            let (info, io) = listener_select_proto(b.compat(), listener.protocol_info())
                .await
                .unwrap();
            listener.upgrade_inbound(io, info).await.map(|_| ())
        };
        let (dialed, listened) = tokio::join!(dial, listen);
        assert!(dialed.is_err() || listened.is_err());
    }
}
