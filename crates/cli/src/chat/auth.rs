//! Getting a token: `--token`, or log in / register with a password from
//! `PARLEY_PASSWORD` or a prompt; then a check that the node accepts it.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use parley_client::protocol::{CloseCode, valid_username};
use parley_client::{ClientError, Connection, Welcome, http};

/// How the user signs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Token(String),
    Password {
        user: String,
        password: String,
        register: bool,
    },
}

/// Picks the credentials: the token if given, else the user's password from
/// `env_password` (`PARLEY_PASSWORD`) or, failing that, from `prompt`.
pub fn credentials(
    token: Option<&str>,
    user: Option<&str>,
    register: bool,
    env_password: Option<String>,
    prompt: impl FnOnce(&str) -> anyhow::Result<String>,
) -> anyhow::Result<Credentials> {
    if let Some(token) = token {
        if register {
            bail!("--register creates an account with a password; it does not go with --token");
        }
        return Ok(Credentials::Token(token.trim().to_string()));
    }
    let Some(user) = user else {
        bail!("--user NAME is needed to log in (or give --token)");
    };
    if !valid_username(user) {
        bail!("{user:?} is not a valid username (1–32 of A–Z a–z 0–9 _ . -)");
    }
    let password = match env_password {
        Some(p) => p,
        None => prompt(&format!("Password for {user}: "))?,
    };
    if password.is_empty() {
        bail!("no password given");
    }
    Ok(Credentials::Password {
        user: user.to_string(),
        password,
        register,
    })
}

/// Reads a password: without echo on a terminal, else one line of stdin.
pub fn prompt_password(prompt: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        return read_hidden(prompt);
    }
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    if n == 0 {
        bail!("no password: stdin ended (set PARLEY_PASSWORD or use --token)");
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Reads a line in raw mode, echoing nothing.
fn read_hidden(prompt: &str) -> anyhow::Result<String> {
    struct Raw;
    impl Drop for Raw {
        fn drop(&mut self) {
            let _ = crossterm::terminal::disable_raw_mode();
            eprintln!();
        }
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    crossterm::terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
    let _raw = Raw;
    let mut password = String::new();
    loop {
        let Event::Key(key) = event::read().context("reading the password")? else {
            continue;
        };
        if key.kind == KeyEventKind::Release {
            continue;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Enter => return Ok(password),
            KeyCode::Char('c' | 'd') if ctrl => bail!("no password given"),
            KeyCode::Char('u') if ctrl => password.clear(),
            KeyCode::Esc => bail!("no password given"),
            KeyCode::Backspace => {
                password.pop();
            }
            KeyCode::Char(c) if !ctrl => password.push(c),
            _ => {}
        }
    }
}

/// Logs in or registers; returns the token.
pub async fn obtain_token(base: &str, credentials: Credentials) -> anyhow::Result<String> {
    let (user, password, register) = match credentials {
        Credentials::Token(token) => return Ok(token),
        Credentials::Password {
            user,
            password,
            register,
        } => (user, password, register),
    };
    let reply = if register {
        http::register(base, &user, &password).await
    } else {
        http::login(base, &user, &password).await
    };
    match reply {
        Ok(reply) => Ok(reply.token),
        Err(e) => Err(anyhow::anyhow!(auth_failure(&e, &user, register, base))),
    }
}

/// A clear sentence for a failed login or registration.
pub fn auth_failure(e: &ClientError, user: &str, register: bool, base: &str) -> String {
    let what = if register {
        format!("registering {user}")
    } else {
        format!("logging in as {user}")
    };
    match e {
        ClientError::Http {
            status: 401,
            message,
            ..
        } => format!("{what} failed: {message} (HTTP 401)"),
        ClientError::Http {
            status: 409,
            message,
            ..
        } => format!(
            "{what} failed: {message} (HTTP 409; the name is taken: log in without --register)"
        ),
        ClientError::Http {
            status, message, ..
        } => format!("{what} failed: {message} (HTTP {status})"),
        ClientError::Connect { message, .. } => {
            format!("{what} failed: cannot reach the server at {base}: {message}")
        }
        ClientError::Request(message) => {
            format!("{what} failed: the request to the server at {base} broke off: {message}")
        }
        other => format!("{what} failed: {other}"),
    }
}

/// Connects once and says hello, so that a refused token or an unreachable
/// node is a clear error at start rather than endless reconnecting (the
/// resilient client keeps retrying a hello refused with an error reply).
pub async fn check_token(ws_url: &str, token: &str) -> anyhow::Result<Welcome> {
    let mut conn = match Connection::connect(ws_url).await {
        Ok(conn) => conn,
        Err(ClientError::Connect { message, .. }) => {
            bail!("cannot connect to the server at {ws_url}: {message}")
        }
        Err(e) => bail!("cannot connect to the server at {ws_url}: {e}"),
    };
    let welcome = match conn.hello(token).await {
        Ok(w) => w,
        Err(ClientError::Server { code, message }) => {
            bail!("the server refused the token ({code}): {message}")
        }
        Err(e) if e.close() == Some(CloseCode::Unauthorized) => {
            bail!("the server refused the token (close 4401)")
        }
        Err(e) => return Err(e).context(format!("saying hello to {ws_url}")),
    };
    conn.close().await;
    Ok(welcome)
}

#[cfg(test)]
mod tests {
    use parley_client::protocol::ErrorCode;

    use super::*;

    fn no_prompt(_: &str) -> anyhow::Result<String> {
        panic!("must not prompt")
    }

    #[test]
    fn a_token_wins() {
        let c = credentials(Some(" tok \n"), Some("alice"), false, None, no_prompt).unwrap();
        assert_eq!(c, Credentials::Token("tok".into()));
        let e = credentials(Some("tok"), None, true, None, no_prompt).unwrap_err();
        assert!(e.to_string().contains("--register"), "{e}");
    }

    #[test]
    fn the_password_comes_from_the_environment_or_the_prompt() {
        let c = credentials(
            None,
            Some("alice"),
            true,
            Some("secret99".into()),
            no_prompt,
        )
        .unwrap();
        assert_eq!(
            c,
            Credentials::Password {
                user: "alice".into(),
                password: "secret99".into(),
                register: true
            }
        );
        let c = credentials(None, Some("alice"), false, None, |p| {
            assert!(p.contains("alice"));
            Ok("typed-pw".into())
        })
        .unwrap();
        assert!(matches!(c, Credentials::Password { password, .. } if password == "typed-pw"));
        let e = credentials(None, Some("alice"), false, None, |_| Ok(String::new())).unwrap_err();
        assert!(e.to_string().contains("no password"));
    }

    #[test]
    fn a_user_is_needed_without_a_token() {
        let e = credentials(None, None, false, Some("x".into()), no_prompt).unwrap_err();
        assert!(e.to_string().contains("--user"), "{e}");
        let e = credentials(None, Some("al ice"), false, Some("x".into()), no_prompt).unwrap_err();
        assert!(e.to_string().contains("not a valid username"), "{e}");
    }

    #[test]
    fn failures_read_clearly() {
        let e = ClientError::Http {
            status: 401,
            code: Some(ErrorCode::Unauthorized),
            message: "wrong username or password".into(),
        };
        assert_eq!(
            auth_failure(&e, "alice", false, "http://h:1"),
            "logging in as alice failed: wrong username or password (HTTP 401)"
        );
        let e = ClientError::Http {
            status: 409,
            code: Some(ErrorCode::Conflict),
            message: "taken".into(),
        };
        assert!(
            auth_failure(&e, "alice", true, "http://h:1")
                .starts_with("registering alice failed: taken")
        );
        let e = ClientError::Connect {
            url: "http://h:1".into(),
            message: "refused".into(),
        };
        assert!(
            auth_failure(&e, "alice", false, "http://h:1")
                .contains("cannot reach the server at http://h:1")
        );
    }
}
