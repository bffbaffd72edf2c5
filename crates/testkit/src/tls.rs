//! Certificates for TLS tests, made by Debian's `openssl` command in a temp
//! dir: a CA, and a server certificate it signed for `127.0.0.1` and
//! `localhost` — what a managed PostgreSQL or Redis presents. A second,
//! unrelated CA stands for "the wrong CA".

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// Every key is P-256: quick to make, and what managed services present.
const KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1";

/// A CA and a server certificate it signed, as PEM files.
pub struct TestCerts {
    dir: TempDir,
}

impl TestCerts {
    /// Generates a CA (P-256) and a server certificate for 127.0.0.1/localhost.
    pub fn generate() -> TestCerts {
        let dir = TempDir::new().expect("temp dir");
        let certs = TestCerts { dir };
        certs.make_ca("ca", "parley-test-ca");
        certs.make_ca("other-ca", "some-other-ca");
        certs.openssl(&format!(
            "req -new {KEY} -nodes -keyout server.key -out server.csr -subj /CN=localhost"
        ));
        std::fs::write(
            certs.dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("write the extensions file");
        certs.openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
             -days 2 -out server.pem -extfile server.ext",
        );
        certs
    }

    fn make_ca(&self, name: &str, subject: &str) {
        self.openssl(&format!(
            "req -x509 {KEY} -nodes -keyout {name}.key -out {name}.pem -days 2 \
             -subj /CN={subject} -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
    }

    /// Runs `openssl` with `args` (split at whitespace) in the temp dir.
    fn openssl(&self, args: &str) {
        let args: Vec<&str> = args.split_whitespace().collect();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl runs (scripts/test installs Debian's openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA that signed the server certificate.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }

    /// A CA that signed nothing here.
    pub fn other_ca(&self) -> PathBuf {
        self.file("other-ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.file("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }

    /// Copies the server's certificate and key into `dir` (a server that
    /// runs as another user needs its own copies, key mode 0600) and
    /// returns their paths.
    pub fn install_server_pair(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        std::fs::copy(self.server_cert(), &cert).expect("copy the certificate");
        std::fs::copy(self.server_key(), &key).expect("copy the key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the key");
        (cert, key)
    }
}
