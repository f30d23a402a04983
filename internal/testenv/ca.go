package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CA is a throwaway certificate authority generated at test time (ECDSA
// P-256). Its key lives only in memory; CertFile (PEM) is in t.TempDir().
// Trust it in a client with Pool, or through CertFile where a file is needed.
type CA struct {
	CertPEM  []byte
	CertFile string
	Pool     *x509.CertPool

	cert *x509.Certificate
	key  *ecdsa.PrivateKey

	mu     sync.Mutex
	serial int64
}

// NewCA makes a new CA valid from an hour ago for one day.
func NewCA(t T) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: CA key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "popconnector test CA", Organization: []string{"popconnector tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testenv: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testenv: parse CA certificate: %v", err)
	}
	ca := &CA{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Pool:    x509.NewCertPool(),
		cert:    cert,
		key:     key,
		serial:  1,
	}
	ca.Pool.AddCert(cert)
	ca.CertFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca.CertFile, ca.CertPEM, 0o644); err != nil {
		t.Fatalf("testenv: write CA certificate: %v", err)
	}
	return ca
}

// Issue makes a server certificate for hosts (DNS names or IP addresses)
// signed by the CA, valid for one day. The first host is also the subject
// common name. The PEM files are written to a fresh temporary directory,
// readable by unprivileged server processes (the key file is 0644 on
// purpose: it is a throwaway key in a test directory).
func (ca *CA) Issue(t T, hosts ...string) (certFile, keyFile string, cert tls.Certificate) {
	t.Helper()
	if len(hosts) == 0 {
		t.Fatalf("testenv: Issue needs at least one host")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: certificate key: %v", err)
	}
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testenv: issue certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testenv: marshal key: %v", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})

	dir := serverDir(t, "cert")
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatalf("testenv: write certificate: %v", err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o644); err != nil {
		t.Fatalf("testenv: write key: %v", err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("testenv: load issued pair: %v", err)
	}
	return certFile, keyFile, cert
}

// ClientConfig returns a TLS client configuration that trusts only this CA
// and verifies serverName.
func (ca *CA) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
}
