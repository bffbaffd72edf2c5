//! WebSocket close codes: every code a Parley server sends, the reason text
//! it sends with each, and what a client should do next.
//!
//! [`CloseCode`] is the source of truth for the server (`session/socket.rs`
//! takes its reasons from here), for the Rust clients (`parley-client`'s
//! resilient client, `parley chat`, `parley bench`) and, through a table
//! checked by a unit test below, for the web client (`web/app.js`,
//! `CLOSE_CODES`). docs/protocol.md lists the same codes.

/// What a client does after the server closed its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAction {
    /// Reconnect at once (a little jitter spreads a crowd) and resume every
    /// room with `since`: the server wants the client back.
    ReconnectNow,
    /// Reconnect after the client's exponential backoff (see
    /// [`crate::backoff::Backoff`]), then resume with `since`.
    ReconnectWithBackoff,
    /// Do not reconnect: the next connection would end the same way. The
    /// user must act (log in again, or update the client).
    Stop,
}

impl ClientAction {
    /// What to do after a connection ended with `code` (`None`: no close
    /// frame, e.g. the node crashed or the network broke). Codes that a
    /// Parley server does not send are treated like a lost connection.
    pub fn after_close(code: Option<u16>) -> ClientAction {
        code.and_then(CloseCode::from_u16)
            .map_or(ClientAction::ReconnectWithBackoff, CloseCode::action)
    }

    /// The name used in `web/app.js`'s table: `reconnect_now`,
    /// `reconnect_with_backoff`, `stop`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientAction::ReconnectNow => "reconnect_now",
            ClientAction::ReconnectWithBackoff => "reconnect_with_backoff",
            ClientAction::Stop => "stop",
        }
    }
}

impl std::fmt::Display for ClientAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A close code the server sends (RFC 6455 plus Parley's 4xxx codes).
///
/// The action of each code ([`CloseCode::action`]), and why:
///
/// | code | action | why |
/// |---|---|---|
/// | 1000 normal | reconnect with backoff | sent to a peer that was silent for two heartbeat intervals: its network or process stalled, so the path may still be bad |
/// | 1001 going away | reconnect now | the node drains (shutdown, rolling update); other nodes serve, resume with `since` |
/// | 1002 protocol error | stop | the client broke the WebSocket protocol; it would again |
/// | 1003 unsupported data | stop | the client sent a binary frame; it would again |
/// | 1007 invalid payload | stop | the client sent invalid UTF-8; it would again |
/// | 1008 policy violation | stop | the client kept sending frames that are not Parley frames |
/// | 1009 too big | stop | a frame over the limit: a client that resends its unacked frames after reconnecting would send it again and be closed again, forever |
/// | 4401 unauthorized | stop | the token is bad or expired: log in again (or mint a new token) first |
/// | 4408 slow consumer | reconnect now | the client's outbound queue overflowed and was dropped; it is reading again (it read the close), so it comes back and resumes with `since` |
/// | 4429 rate limited | reconnect with backoff | the client sent too much; reconnecting at once would make it worse |
///
/// "Stop" codes 1002–1009 are what docs/protocol.md calls "fix the client".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum CloseCode {
    /// Normal closure; the server sends it to a peer silent for two
    /// heartbeat intervals.
    Normal = 1000,
    /// Node is draining: reconnect at once and resume with `since`.
    GoingAway = 1001,
    /// The peer violated the WebSocket protocol.
    ProtocolError = 1002,
    /// Binary frame received: Parley speaks text frames only.
    UnsupportedData = 1003,
    /// Invalid UTF-8 in a text frame.
    InvalidPayload = 1007,
    /// The peer kept sending frames that are not Parley frames.
    PolicyViolation = 1008,
    /// Frame larger than the node accepts.
    TooBig = 1009,
    /// No hello in time, or a bad/expired token.
    Unauthorized = 4401,
    /// Slow consumer: the outbound queue overflowed; resume with `since`.
    SlowConsumer = 4408,
    /// Rate limited repeatedly: back off.
    RateLimited = 4429,
}

impl CloseCode {
    /// Every code, in numeric order.
    pub const ALL: [CloseCode; 10] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::TooBig,
        CloseCode::Unauthorized,
        CloseCode::SlowConsumer,
        CloseCode::RateLimited,
    ];

    /// The number on the wire.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The code for a number, if it is one the server sends.
    pub const fn from_u16(code: u16) -> Option<CloseCode> {
        Some(match code {
            1000 => CloseCode::Normal,
            1001 => CloseCode::GoingAway,
            1002 => CloseCode::ProtocolError,
            1003 => CloseCode::UnsupportedData,
            1007 => CloseCode::InvalidPayload,
            1008 => CloseCode::PolicyViolation,
            1009 => CloseCode::TooBig,
            4401 => CloseCode::Unauthorized,
            4408 => CloseCode::SlowConsumer,
            4429 => CloseCode::RateLimited,
            _ => return None,
        })
    }

    /// The reason text the server sends with the code (empty for 1000 and
    /// 1002).
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal | CloseCode::ProtocolError => "",
            CloseCode::GoingAway => "node is draining; reconnect and resume",
            CloseCode::UnsupportedData => "binary frames are not supported",
            CloseCode::InvalidPayload => "invalid UTF-8",
            CloseCode::PolicyViolation => "too many malformed frames",
            CloseCode::TooBig => "frame too large",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::SlowConsumer => {
                "slow consumer: outbound queue overflowed; resume with since"
            }
            CloseCode::RateLimited => "rate limited repeatedly",
        }
    }

    /// The shortest wait before reconnecting after this close, whatever the
    /// client's backoff says. A client closed for flooding (4429) stays away
    /// 10 s, long enough for its send bucket to refill and for a person to
    /// notice; every other code: none.
    pub const fn min_delay(self) -> std::time::Duration {
        match self {
            CloseCode::RateLimited => std::time::Duration::from_secs(10),
            _ => std::time::Duration::ZERO,
        }
    }

    /// What a client does next (the reasons are in the type's doc).
    pub const fn action(self) -> ClientAction {
        match self {
            CloseCode::GoingAway | CloseCode::SlowConsumer => ClientAction::ReconnectNow,
            CloseCode::Normal | CloseCode::RateLimited => ClientAction::ReconnectWithBackoff,
            CloseCode::ProtocolError
            | CloseCode::UnsupportedData
            | CloseCode::InvalidPayload
            | CloseCode::PolicyViolation
            | CloseCode::TooBig
            | CloseCode::Unauthorized => ClientAction::Stop,
        }
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.code()
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// The codes as plain numbers, for `match` patterns and `u16` APIs.
pub const NORMAL: u16 = CloseCode::Normal.code();
pub const GOING_AWAY: u16 = CloseCode::GoingAway.code();
pub const PROTOCOL_ERROR: u16 = CloseCode::ProtocolError.code();
pub const UNSUPPORTED_DATA: u16 = CloseCode::UnsupportedData.code();
pub const INVALID_PAYLOAD: u16 = CloseCode::InvalidPayload.code();
pub const POLICY_VIOLATION: u16 = CloseCode::PolicyViolation.code();
pub const TOO_BIG: u16 = CloseCode::TooBig.code();
pub const UNAUTHORIZED: u16 = CloseCode::Unauthorized.code();
pub const SLOW_CONSUMER: u16 = CloseCode::SlowConsumer.code();
pub const RATE_LIMITED: u16 = CloseCode::RateLimited.code();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_u16(c.code()), Some(c));
            assert_eq!(u16::from(c), c.code());
        }
        assert!(CloseCode::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(CloseCode::from_u16(1006), None);
        assert_eq!(CloseCode::from_u16(4000), None);
        assert_eq!(GOING_AWAY, 1001);
        assert_eq!(PROTOCOL_ERROR, 1002);
        assert_eq!(RATE_LIMITED, 4429);
    }

    #[test]
    fn reasons_are_the_ones_the_server_sends() {
        assert_eq!(CloseCode::Normal.reason(), "");
        assert_eq!(CloseCode::ProtocolError.reason(), "");
        assert_eq!(
            CloseCode::SlowConsumer.reason(),
            "slow consumer: outbound queue overflowed; resume with since"
        );
        // A close frame's reason is at most 123 bytes.
        assert!(CloseCode::ALL.iter().all(|c| c.reason().len() <= 123));
    }

    #[test]
    fn actions() {
        use ClientAction::*;
        let table: Vec<(u16, ClientAction)> = CloseCode::ALL
            .iter()
            .map(|c| (c.code(), c.action()))
            .collect();
        assert_eq!(
            table,
            [
                (1000, ReconnectWithBackoff),
                (1001, ReconnectNow),
                (1002, Stop),
                (1003, Stop),
                (1007, Stop),
                (1008, Stop),
                (1009, Stop),
                (4401, Stop),
                (4408, ReconnectNow),
                (4429, ReconnectWithBackoff),
            ]
        );
        assert_eq!(ClientAction::after_close(None), ReconnectWithBackoff);
        assert_eq!(ClientAction::after_close(Some(1006)), ReconnectWithBackoff);
        assert_eq!(ClientAction::after_close(Some(4401)), Stop);
        assert_eq!(ClientAction::after_close(Some(1001)), ReconnectNow);
    }

    /// One row of `web/app.js`'s `CLOSE_CODES` table.
    #[derive(Debug, PartialEq)]
    struct JsRow {
        code: u16,
        reason: String,
        action: String,
        min_delay_ms: u64,
    }

    /// The string value of `key: '…'` in a line of the table.
    fn js_field(line: &str, key: &str) -> Option<String> {
        let start = line.find(&format!("{key}: '"))? + key.len() + 3;
        let len = line[start..].find('\'')?;
        Some(line[start..start + len].to_string())
    }

    /// Reads the rows of `const CLOSE_CODES = Object.freeze({ … });`, one
    /// `1001: { name: '…', reason: '…', action: '…' },` per line.
    fn js_close_table(source: &str) -> Vec<JsRow> {
        let start = source
            .find("const CLOSE_CODES = Object.freeze({")
            .expect("web/app.js has no `const CLOSE_CODES = Object.freeze({`");
        let body = &source[start..];
        let end = body
            .find("});")
            .expect("CLOSE_CODES is not closed with `});`");
        body[..end]
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .map(|line| {
                let (code, _) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("not a table row: {line}"));
                JsRow {
                    code: code
                        .trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("no code in: {line}")),
                    reason: js_field(line, "reason")
                        .unwrap_or_else(|| panic!("no reason in: {line}")),
                    action: js_field(line, "action")
                        .unwrap_or_else(|| panic!("no action in: {line}")),
                    min_delay_ms: line
                        .split_once("minDelayMs: ")
                        .and_then(|(_, rest)| {
                            rest.split(|c: char| !c.is_ascii_digit())
                                .next()?
                                .parse()
                                .ok()
                        })
                        .unwrap_or_else(|| panic!("no minDelayMs in: {line}")),
                }
            })
            .collect()
    }

    #[test]
    fn the_web_client_table_matches() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/app.js");
        let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let js = js_close_table(&source);
        let rust: Vec<JsRow> = CloseCode::ALL
            .iter()
            .map(|c| JsRow {
                code: c.code(),
                reason: c.reason().to_string(),
                action: c.action().as_str().to_string(),
                min_delay_ms: c.min_delay().as_millis() as u64,
            })
            .collect();
        assert_eq!(
            js, rust,
            "web/app.js CLOSE_CODES differs from CloseCode (crates/protocol/src/close.rs)"
        );
    }

    #[test]
    fn the_table_parser_reads_rows() {
        let src = "x\n  const CLOSE_CODES = Object.freeze({\n    // c\n    \
                   1001: { name: 'going_away', reason: 'a; b', action: 'reconnect_now', minDelayMs: 0 },\n  });\n";
        assert_eq!(
            js_close_table(src),
            [JsRow {
                code: 1001,
                reason: "a; b".into(),
                action: "reconnect_now".into(),
                min_delay_ms: 0,
            }]
        );
    }
}
