//! Real `nginx` and `haproxy` in the foreground, from config templates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, port_accepts, require_tool, Process, TempDir};

/// How long a proxy may take to accept TCP on its listen port.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Replaces every `${NAME}` in `template` (NAME made of `A-Z`, `0-9`, `_`, starting with a
/// letter) by its value in `vars`. Other `$` uses (nginx's `$http_upgrade`, `${lowercase}`)
/// are left alone.
///
/// # Errors
///
/// Names an upper-case placeholder that has no value, so a typo cannot reach the proxy.
pub fn render_template(template: &str, vars: &[(&str, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let name_len = after
            .find('}')
            .filter(|&end| is_placeholder_name(&after[..end]));
        match name_len {
            Some(end) => {
                let name = &after[..end];
                let value = vars
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value)
                    .ok_or_else(|| format!("template placeholder ${{{name}}} has no value"))?;
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_placeholder_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Reads a template, adds `LISTEN_PORT` (a free port) unless given and `RUN_DIR` (the temp
/// dir), renders it into `<RUN_DIR>/<file_name>`. Returns (listen port, rendered file).
fn prepare(
    label: &str,
    template_path: &Path,
    vars: &[(&str, String)],
    dir: &TempDir,
    file_name: &str,
) -> (u16, PathBuf) {
    let template = std::fs::read_to_string(template_path).unwrap_or_else(|e| {
        panic!(
            "{label}: cannot read config template {}: {e}",
            template_path.display()
        )
    });
    let mut all: Vec<(&str, String)> = vars.to_vec();
    let port = match vars.iter().find(|(k, _)| *k == "LISTEN_PORT") {
        Some((_, v)) => v
            .parse()
            .unwrap_or_else(|_| panic!("{label}: LISTEN_PORT must be a port number, got {v:?}")),
        None => {
            let port = free_port();
            all.push(("LISTEN_PORT", port.to_string()));
            port
        }
    };
    if !vars.iter().any(|(k, _)| *k == "RUN_DIR") {
        all.push(("RUN_DIR", dir.path().display().to_string()));
    }
    let rendered = render_template(&template, &all)
        .unwrap_or_else(|e| panic!("{label}: {}: {e}", template_path.display()));
    let conf = dir.path().join(file_name);
    std::fs::write(&conf, rendered)
        .unwrap_or_else(|e| panic!("{label}: cannot write {}: {e}", conf.display()));
    (port, conf)
}

fn wait_listening(process: &mut Process, port: u16) {
    process.wait_for(
        &format!("TCP accept on 127.0.0.1:{port}"),
        START_TIMEOUT,
        || {
            if port_accepts(port) {
                Ok(())
            } else {
                Err("connection refused".to_owned())
            }
        },
    );
}

/// A real `nginx` in the foreground, single process, from a config template.
///
/// Run as `nginx -p <tmp>/ -e <tmp>/error.log -c <tmp>/nginx.conf -g 'daemon off;
/// master_process off; pid <tmp>/nginx.pid; error_log <tmp>/error.log info;'`, so the template
/// stays a deployable file: it must NOT set `daemon`, `master_process` or `pid` (duplicates
/// of `-g` are errors). `master_process off` means one process and no `user` switch (so root
/// needs no `user root;`), and SIGKILL leaves no orphaned workers holding the port.
///
/// Placeholders: any `${NAME}` from `vars`, plus `${LISTEN_PORT}` (a free port unless given)
/// and `${RUN_DIR}` (the temp dir, e.g. for `access_log ${RUN_DIR}/access.log;` or temp
/// paths). The process is killed, and the directory removed, on drop.
#[derive(Debug)]
pub struct Nginx {
    process: Process,
    port: u16,
    config: PathBuf,
    dir: TempDir,
}

impl Nginx {
    /// Renders `config_template` with `vars`, starts nginx and waits (at most 10 s) until
    /// `LISTEN_PORT` accepts TCP.
    ///
    /// # Panics
    ///
    /// If nginx is missing, the template has an unknown placeholder, or nginx does not come
    /// up (the message has its error log).
    pub fn start(config_template: &Path, vars: &[(&str, String)]) -> Nginx {
        let dir = TempDir::new("nginx");
        let (port, config) = prepare("nginx", config_template, vars, &dir, "nginx.conf");
        let run = dir.path();
        let error_log = run.join("error.log");
        let mut cmd = Command::new(require_tool("nginx"));
        cmd.current_dir(run)
            .arg("-p")
            .arg(format!("{}/", run.display()))
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&config)
            .arg("-g")
            .arg(format!(
                "daemon off; master_process off; pid {}; error_log {} info;",
                run.join("nginx.pid").display(),
                error_log.display()
            ));
        // stdout/stderr and the error log share one file: a failed start shows everything.
        let mut process = Process::spawn(&format!("nginx:{port}"), cmd, &error_log);
        wait_listening(&mut process, port);
        Nginx {
            process,
            port,
            config,
            dir,
        }
    }

    /// The listen port (`LISTEN_PORT`) on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The rendered config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The run directory (`RUN_DIR`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The error log (plus stdout/stderr).
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// SIGKILLs nginx and waits for it to be gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// A real `haproxy` in the foreground (`haproxy -f <rendered> -db`), from a config template.
///
/// Placeholders as for [`Nginx`]: `${NAME}` from `vars`, `${LISTEN_PORT}` (a free port unless
/// given), `${RUN_DIR}`. (HAProxy itself also expands `"${NAME}"` from its environment, so a
/// deployable template can use the same names.) The process is killed, and the directory
/// removed, on drop.
#[derive(Debug)]
pub struct Haproxy {
    process: Process,
    port: u16,
    config: PathBuf,
    dir: TempDir,
}

impl Haproxy {
    /// Renders `config_template` with `vars`, starts haproxy and waits (at most 10 s) until
    /// `LISTEN_PORT` accepts TCP.
    ///
    /// # Panics
    ///
    /// If haproxy is missing, the template has an unknown placeholder, or haproxy does not
    /// come up (the message has its output).
    pub fn start(config_template: &Path, vars: &[(&str, String)]) -> Haproxy {
        let dir = TempDir::new("haproxy");
        let (port, config) = prepare("haproxy", config_template, vars, &dir, "haproxy.cfg");
        let log = dir.path().join("haproxy.log");
        let mut cmd = Command::new(require_tool("haproxy"));
        cmd.current_dir(dir.path())
            .arg("-f")
            .arg(&config)
            .arg("-db");
        for (name, value) in vars {
            cmd.env(name, value);
        }
        let mut process = Process::spawn(&format!("haproxy:{port}"), cmd, &log);
        wait_listening(&mut process, port);
        Haproxy {
            process,
            port,
            config,
            dir,
        }
    }

    /// The listen port (`LISTEN_PORT`) on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The rendered config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The run directory (`RUN_DIR`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// haproxy's stdout/stderr (alerts and warnings; `-db` logs there).
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// SIGKILLs haproxy and waits for it to be gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::render_template;

    #[test]
    fn renders_placeholders_and_leaves_nginx_variables() {
        let vars = [
            ("LISTEN_PORT", "81".to_owned()),
            ("NODE1_PORT", "9".to_owned()),
        ];
        let out = render_template(
            "listen ${LISTEN_PORT}; set $a $http_upgrade; ${lower} ${NODE1_PORT}$",
            &vars,
        )
        .expect("renders");
        assert_eq!(out, "listen 81; set $a $http_upgrade; ${lower} 9$");
        let err = render_template("x ${MISSING} y", &vars).expect_err("unknown placeholder");
        assert!(err.contains("${MISSING}"), "{err}");
    }
}
