//! One node per data directory, and ports that are free: what a node checks before it starts
//! anything. Two nodes on one data directory would run two nats-servers on one JetStream store
//! (a write stored by one, unknown to the other); a port that is taken would otherwise show up
//! as a line buried in nats-server's log.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, Write},
    net::{SocketAddr, TcpListener},
    os::fd::AsRawFd,
    path::Path,
};

use anyhow::{Context, bail};

use crate::config::{Config, NodeType};

/// The lock file inside the data directory; it holds the pid of the node that has it.
const LOCK_FILE: &str = "presence.lock";

/// An exclusive lock on a node's data directory, held while it lives (the kernel lets go of it
/// when the process ends, however it ends).
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

/// Takes the data directory of an embedded server for this node, or says who has it.
pub(crate) fn data_dir(config: &Config) -> anyhow::Result<Option<DataDirLock>> {
    if !config.nats.embedded {
        return Ok(None);
    }
    let dir = &config.nats.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create nats.data_dir {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => "another process".to_string(),
            pid => format!("the process with pid {pid}"),
        };
        bail!(
            "nats.data_dir {} (--data-dir) is in use by another Presence node ({holder}); give each node a \
             data directory of its own",
            absolute(dir)
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(Some(DataDirLock { _file: file }))
}

fn absolute(dir: &Path) -> String {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()).display().to_string()
}

/// Fails, in one line naming the setting and its flag, if a port the node will open is taken.
/// (Port 0 lets the OS choose: nothing to check.)
pub(crate) fn ports(config: &Config) -> anyhow::Result<()> {
    let mut wanted =
        vec![(SocketAddr::new(config.service.host, config.service.port), "service.port", "--port")];
    if config.nats.embedded {
        wanted.push((SocketAddr::new(config.nats.host, config.nats.port), "nats.port", "--nats-port"));
        if config.service.node_type == NodeType::Center {
            let host = config.nats.leaf_host.unwrap_or(config.nats.host);
            wanted.push((SocketAddr::new(host, config.nats.leaf_port), "nats.leaf_port", "--leaf-port"));
        }
    }
    for (addr, setting, flag) in wanted.into_iter().filter(|(addr, ..)| addr.port() != 0) {
        match TcpListener::bind(addr) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
                "{setting} ({flag}): {addr} is taken (address already in use); choose a free port with {flag}"
            ),
            Err(e) => bail!("{setting} ({flag}): cannot listen on {addr}: {e}"),
        }
    }
    Ok(())
}
