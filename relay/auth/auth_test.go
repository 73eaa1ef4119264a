package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var enc = base64.RawURLEncoding

// sign builds a token with header alg and the given signer over the
// signing input.
func sign(t testing.TB, header, claims map[string]any, signer func([]byte) []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	in := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	return in + "." + enc.EncodeToString(signer([]byte(in)))
}

func rsSigner(k *rsa.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte {
		d := sha256.Sum256(in)
		s, _ := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
		return s
	}
}

func esSigner(k *ecdsa.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte {
		d := sha256.Sum256(in)
		r, s, _ := ecdsa.Sign(rand.Reader, k, d[:])
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out
	}
}

func writePEM(t *testing.T, pub any) (string, []byte) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	p := filepath.Join(t.TempDir(), "key.pem")
	os.WriteFile(p, b, 0o600)
	return p, b
}

func TestVerify(t *testing.T) {
	secret := []byte(strings.Repeat("s", 32))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaPath, rsaPEM := writePEM(t, &rsaKey.PublicKey)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(jwks, fmt.Appendf(nil, `{"keys":[{"kty":"EC","kid":"ec1","crv":"P-256","x":%q,"y":%q,"use":"sig"}]}`,
		enc.EncodeToString(ecKey.PublicKey.X.FillBytes(make([]byte, 32))), enc.EncodeToString(ecKey.PublicKey.Y.FillBytes(make([]byte, 32)))), 0o600)

	cfg := DefaultConfig()
	cfg.HMACSecrets = [][]byte{secret}
	cfg.PublicKeyFiles = []string{rsaPath}
	cfg.JWKSFile = jwks
	cfg.Issuer, cfg.Audience = "bookmaker", "edgerelay"
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	good := func() map[string]any {
		return map[string]any{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "iss": "bookmaker", "aud": []string{"x", "edgerelay"}}
	}
	with := func(k string, val any) map[string]any { c := good(); c[k] = val; return c }
	without := func(k string) map[string]any { c := good(); delete(c, k); return c }
	hs := func(alg string) map[string]any { return map[string]any{"alg": alg, "typ": "JWT"} }
	hsSign := func(in []byte) []byte { return hmacSHA256(secret, in) }
	hsTok := func(c map[string]any) string { return sign(t, hs("HS256"), c, hsSign) }

	for _, tt := range []struct {
		name  string
		token string
		want  error // nil: valid
	}{
		{"HS256", hsTok(good()), nil},
		{"RS256", sign(t, hs("RS256"), good(), rsSigner(rsaKey)), nil},
		{"ES256 from JWKS", sign(t, map[string]any{"alg": "ES256", "kid": "ec1"}, good(), esSigner(ecKey)), nil},
		{"ES256 with another kid", sign(t, map[string]any{"alg": "ES256", "kid": "other"}, good(), esSigner(ecKey)), ErrInvalidToken},
		{"expired", hsTok(with("exp", now.Add(-time.Minute).Unix())), ErrTokenExpired},
		{"expired within leeway", hsTok(with("exp", now.Add(-2*time.Second).Unix())), nil},
		{"not yet valid", hsTok(with("nbf", now.Add(time.Minute).Unix())), ErrInvalidToken},
		{"issued in the future", hsTok(with("iat", now.Add(time.Minute).Unix())), ErrInvalidToken},
		{"wrong issuer", hsTok(with("iss", "someone")), ErrInvalidToken},
		{"wrong audience", hsTok(with("aud", "other")), ErrInvalidToken},
		{"no sub", hsTok(without("sub")), ErrInvalidToken},
		{"empty sub", hsTok(with("sub", "")), ErrInvalidToken},
		{"sub not a string", hsTok(with("sub", 42)), ErrInvalidToken},
		{"no exp", hsTok(without("exp")), ErrInvalidToken},
		{"exp a string", hsTok(with("exp", "9999999999")), ErrInvalidToken},
		{"nbf past int64 (wraps to the past when converted)", hsTok(with("nbf", 9.3e18)), ErrInvalidToken},
		{"iat past int64", hsTok(with("iat", 1.8446744073709552e19)), ErrInvalidToken},
		{"exp past year 9999", hsTok(with("exp", 1e17)), ErrInvalidToken},
		{"negative nbf", hsTok(with("nbf", -1)), ErrInvalidToken},
		{"bad signature", hsTok(good())[:len(hsTok(good()))-4] + "AAAA", ErrInvalidToken},
		{"alg none", sign(t, hs("none"), good(), func([]byte) []byte { return nil }), ErrInvalidToken},
		{"HS256 signed with the RSA public key", sign(t, hs("HS256"), good(), func(in []byte) []byte { return hmacSHA256(rsaPEM, in) }), ErrInvalidToken},
		{"ES384 header on a P-256 key", sign(t, hs("ES384"), good(), esSigner(ecKey)), ErrInvalidToken},
		{"RS256 header, ES signature", sign(t, hs("RS256"), good(), esSigner(ecKey)), ErrInvalidToken},
		{"crit header", sign(t, map[string]any{"alg": "HS256", "crit": []string{"exp"}}, good(), hsSign), ErrInvalidToken},
		{"padded segment", strings.Replace(hsTok(good()), ".", "=.", 1), ErrInvalidToken},
		{"two segments", "a.b", ErrInvalidToken},
		{"oversize", strings.Repeat("a", 9000), ErrInvalidToken},
		{"empty", "", ErrInvalidToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(tt.token, now)
			if tt.want == nil {
				if err != nil || c.Subject != "alice" {
					t.Fatalf("Verify: %v, claims %+v", err, c)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify: %v, want %v", err, tt.want)
			}
		})
	}
}

// TestRFC7515 checks our HMAC verification against the example of RFC 7515
// appendix A.1, computed by someone else.
func TestRFC7515(t *testing.T) {
	k, _ := enc.DecodeString("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
	const tok = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	v := &Verifier{keys: []key{{hmac: k, algs: []string{"HS256"}}}}
	parts := strings.Split(tok, ".")
	sig, _ := enc.DecodeString(parts[2])
	if !v.verifySig("HS256", "", []byte(parts[0]+"."+parts[1]), sig) {
		t.Fatal("RFC 7515 A.1 example does not verify")
	}
	sig[0] ^= 1
	if v.verifySig("HS256", "", []byte(parts[0]+"."+parts[1]), sig) {
		t.Fatal("a flipped bit verifies")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{HMACSecrets: [][]byte{[]byte("short")}}, "auth.hmac_secrets[0]"},
		{Config{}, "no hmac_secrets"},
		{Config{PublicKeyFiles: []string{"/nonexistent.pem"}}, "/nonexistent.pem"},
	} {
		if _, err := NewVerifier(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewVerifier(%+v): %v, want an error naming %q", tt.cfg, err, tt.want)
		}
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p, _ := writePEM(t, &small.PublicKey)
	if _, err := NewVerifier(Config{PublicKeyFiles: []string{p}}); err == nil || !strings.Contains(err.Error(), "2048") {
		t.Errorf("1024-bit RSA key: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	secret := []byte(strings.Repeat("s", 32))
	good, _ := SignHS256(secret, map[string]any{"sub": "a", "exp": 1})
	for _, s := range []string{good, "", "a.b.c", "e30.e30.", strings.Replace(good, "e", "=", 3)} {
		f.Add(s)
	}
	v, err := NewVerifier(Config{HMACSecrets: [][]byte{secret}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(tok, time.Unix(0, 0))
		if err == nil && c.Subject == "" {
			t.Fatal("accepted a token without a subject")
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	secret := []byte(strings.Repeat("s", 32))
	v, _ := NewVerifier(Config{HMACSecrets: [][]byte{secret}})
	tok, _ := SignHS256(secret, map[string]any{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(tok, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

func hmacSHA256(key, in []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(in)
	return m.Sum(nil)
}
