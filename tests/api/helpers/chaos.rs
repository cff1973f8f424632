//! A TCP proxy on loopback between a client and a server: its link can be cut and healed (a
//! network partition), and each direction can be delayed (a slow or distant link), at run time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    time::Instant,
};

pub(crate) struct ChaosProxy {
    pub port: u16,
    link: Arc<Link>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

/// What every connection through the proxy obeys.
#[derive(Default)]
struct Link {
    cut: AtomicBool,
    /// Milliseconds each chunk waits: towards the target, and back from it.
    to_target_ms: AtomicU64,
    from_target_ms: AtomicU64,
}

impl ChaosProxy {
    pub(crate) async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let link = Arc::new(Link::default());
        let (generation, _) = watch::channel(0u64);
        let (shared, generations) = (link.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { return };
                if shared.cut.load(SeqCst) {
                    continue; // dropped: refused while cut
                }
                let cancelled = generations.subscribe();
                tokio::spawn(relay(inbound, target, shared.clone(), cancelled));
            }
        });
        Self { port, link, generation, task }
    }

    /// Drops every open connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.link.cut.store(true, SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub(crate) fn heal(&self) {
        self.link.cut.store(false, SeqCst);
    }

    /// Delays every chunk sent from now on: `to_target` on its way to the server, `from_target`
    /// on its way back. Order within a direction is kept.
    pub(crate) fn delay(&self, to_target: Duration, from_target: Duration) {
        self.link.to_target_ms.store(to_target.as_millis() as u64, SeqCst);
        self.link.from_target_ms.store(from_target.as_millis() as u64, SeqCst);
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(inbound: TcpStream, target: u16, link: Arc<Link>, mut cancelled: watch::Receiver<u64>) {
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else { return };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (client_read, client_write) = inbound.into_split();
    let (server_read, server_write) = outbound.into_split();
    let to = pipe(client_read, server_write, link.clone(), true);
    let from = pipe(server_read, client_write, link, false);
    tokio::select! {
        _ = async { tokio::join!(to, from) } => {}
        _ = cancelled.changed() => {}
    }
}

/// Copies one direction, holding each chunk back by the direction's delay at the time it was read.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
    towards_target: bool,
) {
    let (queue, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = if towards_target { &link.to_target_ms } else { &link.from_target_ms };
            let at = Instant::now() + Duration::from_millis(delay.load(SeqCst));
            if queue.send((at, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
