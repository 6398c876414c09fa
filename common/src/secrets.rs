//! Database URLs are secrets: everything that prints or logs one goes through here.

use std::fmt;

/// A database URL that never shows its password when displayed or debug-printed.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with credentials, for handing to a driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with every password replaced by `****`.
    pub fn masked(&self) -> String {
        mask_url(&self.0)
    }

    /// `text` (a driver's error message, say) with this URL's password and client key path
    /// replaced by `****`, in case the text quotes them.
    pub fn scrub(&self, text: &str) -> String {
        let mut masked = mask_url(text);
        if let Some(password) = self.password().filter(|password| !password.is_empty()) {
            masked = masked.replace(password, MASK);
        }
        if let Some(key) = self.key_path().filter(|key| !key.is_empty()) {
            masked = masked.replace(&key, MASK);
        }
        masked
    }

    /// The client key's path (`sslkey`), decoded.
    fn key_path(&self) -> Option<String> {
        let parsed = url::Url::parse(&self.0).ok()?;
        parsed
            .query_pairs()
            .find(|(key, _)| key == "sslkey")
            .map(|(_, value)| value.into_owned())
    }

    /// Where the server is, for messages: the URL's `host:port`, a SQLite URL's file, or the
    /// masked URL when it names neither (a Unix socket given as a parameter).
    pub fn server(&self) -> String {
        if let Some(file) = self.0.strip_prefix("sqlite:") {
            let file = file.strip_prefix("//").unwrap_or(file);
            return file[..file.find('?').unwrap_or(file.len())].to_owned();
        }
        let Some((_, rest)) = self.0.split_once("://") else {
            return self.masked();
        };
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if host.is_empty() {
            self.masked()
        } else {
            host.to_owned()
        }
    }

    fn password(&self) -> Option<&str> {
        let authority = self.0.split_once("://")?.1;
        let authority = &authority[..authority.find(['/', '?', '#']).unwrap_or(authority.len())];
        let userinfo = &authority[..authority.rfind('@')?];
        Some(userinfo.split_once(':')?.1)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "DatabaseUrl({})", self.masked())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.masked())
    }
}

const MASK: &str = "****";

/// Masks the password in `scheme://user:password@host`, and any `password=` or `sslkey=`
/// parameter in a URL query or a libpq keyword/value string.
pub fn mask_url(text: &str) -> String {
    let masked_userinfo = match text.find("://") {
        Some(scheme_end) => {
            let authority_start = scheme_end + 3;
            let authority_end = text[authority_start..]
                .find(['/', '?', '#'])
                .map_or(text.len(), |offset| authority_start + offset);
            match text[authority_start..authority_end].rfind('@') {
                Some(at) => {
                    let userinfo = &text[authority_start..authority_start + at];
                    match userinfo.find(':') {
                        Some(colon) => format!(
                            "{}{}:{MASK}{}",
                            &text[..authority_start],
                            &userinfo[..colon],
                            &text[authority_start + at..]
                        ),
                        None => text.to_owned(),
                    }
                }
                None => text.to_owned(),
            }
        }
        None => text.to_owned(),
    };
    mask_password_parameters(&masked_userinfo)
}

/// A migration's statement as it may be shown: the string literal after every `PASSWORD`
/// keyword masked (`CREATE ROLE … PASSWORD '…'`, a user mapping's `OPTIONS (password '…')`),
/// and so is every password in a URL or `password=` parameter it holds.
pub fn mask_statement(sql: &str) -> String {
    let lowered = sql.to_ascii_lowercase();
    let mut output = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut searched = 0;
    while let Some(offset) = lowered[searched..].find("password") {
        let keyword_end = searched + offset + "password".len();
        searched = keyword_end;
        let after = &sql[keyword_end..];
        let literal_start = keyword_end + (after.len() - after.trim_start().len());
        if !sql[literal_start..].starts_with('\'') {
            continue;
        }
        let literal_end = closing_quote(sql, literal_start + 1);
        output.push_str(&sql[copied..=literal_start]);
        output.push_str(MASK);
        copied = literal_end;
        searched = literal_end;
    }
    output.push_str(&sql[copied..]);
    mask_url(&output)
}

/// Where the SQL string literal whose text starts at `start` ends: at its closing quote (a
/// doubled quote is part of the text), or at the end of `sql`.
fn closing_quote(sql: &str, start: usize) -> usize {
    let bytes = sql.as_bytes();
    let mut at = start;
    while at < bytes.len() {
        if bytes[at] == b'\'' {
            if bytes.get(at + 1) == Some(&b'\'') {
                at += 2;
                continue;
            }
            return at;
        }
        at += 1;
    }
    bytes.len()
}

/// Parameters whose values are never shown: passwords, and the client key's path.
const MASKED_PARAMETERS: [&str; 2] = ["password=", "sslkey="];

fn mask_password_parameters(text: &str) -> String {
    MASKED_PARAMETERS
        .iter()
        .fold(text.to_owned(), |text, parameter| {
            mask_parameter(&text, parameter)
        })
}

fn mask_parameter(text: &str, parameter: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = find_ignore_case(rest, parameter) {
        let value_start = position + parameter.len();
        output.push_str(&rest[..value_start]);
        output.push_str(MASK);
        let value_end = rest[value_start..]
            .find(['&', ' ', '#'])
            .map_or(rest.len(), |offset| value_start + offset);
        rest = &rest[value_end..];
    }
    output.push_str(rest);
    output
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack.to_ascii_lowercase().find(needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_shows_no_password() {
        assert_eq!(
            mask_statement("CREATE ROLE app LOGIN PASSWORD 'it''s s3cret' VALID UNTIL 'infinity';"),
            "CREATE ROLE app LOGIN PASSWORD '****' VALID UNTIL 'infinity';"
        );
        assert_eq!(
            mask_statement(
                "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'u', Password\n  'x');"
            ),
            "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'u', Password\n  '****');"
        );
        assert_eq!(
            mask_statement("SELECT dblink_connect('postgres://u:pw@h/db'); -- password_reset"),
            "SELECT dblink_connect('postgres://u:****@h/db'); -- password_reset"
        );
        assert_eq!(
            mask_statement("ALTER ROLE a PASSWORD 'open"),
            "ALTER ROLE a PASSWORD '****"
        );
    }

    #[test]
    fn the_server_is_named_without_credentials() {
        let url = DatabaseUrl::new("postgres://app:s3cr@t@db-1.example:5433/main?sslmode=require");
        assert_eq!(url.server(), "db-1.example:5433");
        let socket = DatabaseUrl::new("postgresql:///main?host=/run/postgresql&password=x");
        assert_eq!(
            socket.server(),
            "postgresql:///main?host=/run/postgresql&password=****"
        );
        assert_eq!(DatabaseUrl::new("sqlite:shard.db").server(), "shard.db");
        assert_eq!(
            DatabaseUrl::new("sqlite:///var/lib/a.db?mode=rwc").server(),
            "/var/lib/a.db"
        );
    }

    #[test]
    fn masks_userinfo_passwords() {
        assert_eq!(
            mask_url("postgres://app:s3cr%40t@db:5432/main?sslmode=require"),
            "postgres://app:****@db:5432/main?sslmode=require"
        );
        assert_eq!(mask_url("postgres://app@db/main"), "postgres://app@db/main");
        assert_eq!(mask_url("sqlite:///tmp/shard.db"), "sqlite:///tmp/shard.db");
    }

    #[test]
    fn masks_password_parameters() {
        assert_eq!(
            mask_url("postgres://db/main?user=app&password=hunter2&sslmode=disable"),
            "postgres://db/main?user=app&password=****&sslmode=disable"
        );
        assert_eq!(
            mask_url("host=db user=app PASSWORD=hunter2 dbname=main"),
            "host=db user=app PASSWORD=**** dbname=main"
        );
    }

    #[test]
    fn the_client_keys_path_is_never_shown() {
        let url = DatabaseUrl::new(
            "postgres://app:pw@db/main?sslmode=verify-full&sslkey=%2Fetc%2Fkeys%2Fapp.key&sslcert=/etc/keys/app.pem",
        );
        assert_eq!(
            url.masked(),
            "postgres://app:****@db/main?sslmode=verify-full&sslkey=****&sslcert=/etc/keys/app.pem"
        );
        assert_eq!(
            url.scrub("could not load /etc/keys/app.key"),
            "could not load ****"
        );
    }

    #[test]
    fn scrub_removes_the_password_from_any_text() {
        let url = DatabaseUrl::new("postgres://app:canary-9f2@db/main");
        assert_eq!(
            url.scrub("server said: bad password canary-9f2 for app"),
            "server said: bad password **** for app"
        );
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let url = DatabaseUrl::new("postgres://app:canary-9f2@db/main");
        assert!(!format!("{url:?} {url}").contains("canary-9f2"));
        assert_eq!(url.expose(), "postgres://app:canary-9f2@db/main");
    }
}
