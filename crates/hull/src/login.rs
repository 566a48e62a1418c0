//! `hull login` and `hull logout`: credentials checked by hulld against the
//! registry, kept in the docker-format auth file that pull and push read.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use hull_api::server::registry_domain;
use hull_api::types::{AuthConfig, AuthResponse};
use hull_api::{AuthFile, Client, Credentials, Method};

use crate::pull::auth_file;

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry: host[:port]; Docker Hub when omitted.
    server: Option<String>,
    #[arg(short, long)]
    username: Option<String>,
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry: host[:port]; Docker Hub when omitted.
    server: Option<String>,
}

pub async fn login(client: &Client, args: LoginArgs) -> Result<()> {
    let Some(username) = args.username else {
        bail!("a username is required: hull login -u USER [-p PASSWORD | --password-stdin] SERVER");
    };
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(password), false) => password,
        (None, true) => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from standard input")?;
            password.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => bail!("a password is required: -p PASSWORD or --password-stdin"),
    };
    let server = args.server.unwrap_or_default();
    let domain = registry_domain(&server);
    let request = AuthConfig {
        username: username.clone(),
        password: password.clone(),
        server_address: domain.clone(),
    };
    let answer: AuthResponse = client
        .call_json(Method::POST, "/auth", Some(&request))
        .await?;
    let path = auth_file().context("no place for the credentials: set HOME or HULL_AUTH_FILE")?;
    let mut file = read_auth_file(&path)?;
    file.set(&domain, &Credentials::new(&username, &password));
    write_auth_file(&path, &file)?;
    println!("{}", answer.status);
    Ok(())
}

pub async fn logout(args: LogoutArgs) -> Result<()> {
    let domain = registry_domain(&args.server.unwrap_or_default());
    let path = auth_file().context("no credentials file: set HOME or HULL_AUTH_FILE")?;
    let mut file = read_auth_file(&path)?;
    if !file.remove(&domain) {
        println!("Not logged in to {domain}");
        return Ok(());
    }
    write_auth_file(&path, &file)?;
    println!("Removing login credentials for {domain}");
    Ok(())
}

fn read_auth_file(path: &Path) -> Result<AuthFile> {
    match std::fs::read(path) {
        Ok(bytes) => {
            AuthFile::parse(&bytes).with_context(|| format!("cannot read {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the file atomically; it holds passwords, so only its owner reads it.
fn write_auth_file(path: &Path, file: &AuthFile) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".auth-")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)?;
        tmp.write_all(&serde_json::to_vec_pretty(file).expect("auth files serialize"))?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}
