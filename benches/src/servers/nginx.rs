//! nginx, the server a user would pick for files: the suite's reference on the static-file
//! and plaintext workloads. This process writes a config (`sendfile on`, `tcp_nopush on`, one
//! worker per server core, no logs) and becomes nginx (exec: the suite's pid, pinning and CPU
//! accounting apply to it), handing it the listening socket it already announced through
//! nginx's own inheritance (`NGINX=fd;`), so no connection can land on a socket nobody
//! serves. nginx writes its own `Server` header and `Connection: keep-alive`; the suite checks
//! its status lines and bodies instead of the shared head.

use std::fmt::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use super::{App, ServerConfig};

/// Where nginx is looked for.
const CANDIDATES: [&str; 3] = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"];

/// The nginx binary, if installed.
pub fn binary() -> Option<PathBuf> {
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Replaces this process with nginx serving `config`; returns only on failure.
pub fn serve(config: ServerConfig) -> Result<(), String> {
    let nginx = binary().ok_or("nginx is not installed")?;
    if config.app != App::Tfb {
        return Err("nginx serves files and plaintext only".into());
    }
    let workers = config.listeners.len();
    let mut listeners = config.listeners.into_iter();
    let listener = listeners.next().ok_or("no listener")?;
    drop(listeners.collect::<Vec<_>>());
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Next to the served file (the suite's output directory), reused by every start: runs are
    // one at a time.
    let dir = config
        .file
        .as_deref()
        .and_then(Path::parent)
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join("nginx");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // nginx resolves relative paths against its own prefix, not our directory.
    let dir = std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = match config.file.as_deref() {
        Some(f) => Some(std::fs::canonicalize(f).map_err(|e| format!("{}: {e}", f.display()))?),
        None => None,
    };
    let canonical =
        |p: &Path| std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()));
    let tls = match &config.tls {
        Some(files) => Some((canonical(&files.cert)?, canonical(&files.key)?)),
        None => None,
    };
    let conf = dir.join("nginx.conf");
    let tls_paths = tls.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    std::fs::write(
        &conf,
        config_text(&dir, addr, workers, file.as_deref(), tls_paths),
    )
    .map_err(|e| format!("{}: {e}", conf.display()))?;
    let fd = listener.as_raw_fd();
    // SAFETY: fcntl on a descriptor this process owns; clearing FD_CLOEXEC keeps the listening
    // socket open across the exec, where nginx takes it over (it is never closed here).
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
            return Err(format!("fcntl: {}", std::io::Error::last_os_error()));
        }
    }
    std::mem::forget(listener);
    use std::os::unix::process::CommandExt as _;
    let err = std::process::Command::new(&nginx)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .env("NGINX", format!("{fd};"))
        .exec();
    Err(format!("cannot run {}: {err}", nginx.display()))
}

/// The config: TechEmpower's plaintext as a fixed answer and `/static` from the file; over
/// TLS 1.2 and 1.3 (OpenSSL) with `tls`'s certificate and key.
fn config_text(
    dir: &Path,
    addr: std::net::SocketAddr,
    workers: usize,
    file: Option<&Path>,
    tls: Option<(&Path, &Path)>,
) -> String {
    let d = dir.display();
    let mut c = String::new();
    let _ = write!(
        c,
        "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {d}/nginx.pid;\n\
         error_log {d}/error.log error;\nevents {{ worker_connections 65536; multi_accept on; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
         \x20 keepalive_requests 100000000;\n  keepalive_timeout 65;\n  server_tokens off;\n\
         \x20 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 server {{\n    listen {addr} backlog=4096{ssl};\n\
         \x20   location = /plaintext {{ default_type text/plain; return 200 \"Hello, World!\"; }}\n",
        ssl = if tls.is_some() { " ssl" } else { "" }
    );
    if let Some((cert, key)) = tls {
        let _ = writeln!(
            c,
            "    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
             \x20   ssl_session_cache shared:tls:10m;",
            cert.display(),
            key.display()
        );
    }
    if let Some(file) = file {
        let _ = writeln!(
            c,
            "    location = /static {{ default_type application/octet-stream; alias {}; }}",
            file.display()
        );
    }
    c.push_str("  }\n}\n");
    c
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_config_sends_files_with_sendfile_and_answers_plaintext() {
        let text = super::config_text(
            std::path::Path::new("/tmp/x"),
            "127.0.0.1:8080".parse().unwrap(),
            1,
            Some(std::path::Path::new("/tmp/x/static.bin")),
            None,
        );
        for want in [
            "sendfile on;",
            "tcp_nopush on;",
            "worker_processes 1;",
            "listen 127.0.0.1:8080 backlog=4096;",
            "return 200 \"Hello, World!\";",
            "alias /tmp/x/static.bin;",
            "access_log off;",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }

    #[test]
    fn over_tls_the_listener_takes_the_certificate() {
        let text = super::config_text(
            std::path::Path::new("/tmp/x"),
            "127.0.0.1:8443".parse().unwrap(),
            1,
            None,
            Some((
                std::path::Path::new("/tmp/x/cert.pem"),
                std::path::Path::new("/tmp/x/key.pem"),
            )),
        );
        for want in [
            "listen 127.0.0.1:8443 backlog=4096 ssl;",
            "ssl_certificate /tmp/x/cert.pem;",
            "ssl_certificate_key /tmp/x/key.pem;",
            "ssl_protocols TLSv1.2 TLSv1.3;",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }
}
