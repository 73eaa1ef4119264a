package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"os"
	"strings"
	"time"
)

// Errors from Verify. ErrTokenExpired is separate so that the relay can
// answer it with the code that makes SDKs fetch a new token.
var (
	ErrInvalidToken = errors.New("auth: invalid token")
	ErrTokenExpired = errors.New("auth: token expired")
)

// Config says which keys verify tokens and what claims are required.
type Config struct {
	HMACSecrets    [][]byte      // HS256/384/512 secrets, at least 32 bytes each
	PublicKeyFiles []string      // PEM: PKIX "PUBLIC KEY" (RSA or EC) or "CERTIFICATE"
	JWKSFile       string        // RFC 7517 key set: kty RSA and EC keys
	Issuer         string        // if set, "iss" must equal it
	Audience       string        // if set, "aud" must contain it
	Leeway         time.Duration // clock skew allowed on exp, nbf and iat
	MaxTokenBytes  int           // longer tokens are refused unparsed (default 8 KiB)
}

// DefaultConfig returns a Config with no keys, 5s leeway and 8 KiB tokens.
func DefaultConfig() Config { return Config{Leeway: 5 * time.Second, MaxTokenBytes: 8 << 10} }

// Validate reports invalid fields by their configuration names.
func (c *Config) Validate() error {
	var errs []error
	for i, s := range c.HMACSecrets {
		if len(s) < 32 {
			errs = append(errs, fmt.Errorf("auth.hmac_secrets[%d]: shorter than 32 bytes", i))
		}
	}
	if c.Leeway < 0 {
		errs = append(errs, errors.New("auth.leeway: must not be negative"))
	}
	if len(c.HMACSecrets) == 0 && len(c.PublicKeyFiles) == 0 && c.JWKSFile == "" {
		errs = append(errs, errors.New("auth: no hmac_secrets, public_key_files or jwks_file"))
	}
	return errors.Join(errs...)
}

// Claims are what a verified token says.
type Claims struct {
	Subject   string
	ExpiresAt time.Time
	Info      json.RawMessage // optional "info", passed on as Centrifugo does
	// Channel is a subscription token's channel: the one channel it
	// lets its user read (Centrifugo's subscription tokens).
	Channel string
	// Channels, in a connection token, are channels the connection is
	// subscribed to by the server, without a subscribe from the client.
	Channels []string
}

// key is one verification key and the algorithms it may verify.
type key struct {
	kid  string
	algs []string
	hmac []byte
	rsa  *rsa.PublicKey
	ec   *ecdsa.PublicKey
}

// Verifier checks tokens; see the package doc.
type Verifier struct {
	cfg  Config
	keys []key
}

// NewVerifier loads the configured keys. Errors name the file.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.MaxTokenBytes <= 0 {
		cfg.MaxTokenBytes = DefaultConfig().MaxTokenBytes
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v := &Verifier{cfg: cfg}
	for _, s := range cfg.HMACSecrets {
		v.keys = append(v.keys, key{hmac: s, algs: []string{"HS256", "HS384", "HS512"}})
	}
	for _, f := range cfg.PublicKeyFiles {
		k, err := loadPEM(f)
		if err != nil {
			return nil, fmt.Errorf("auth.public_key_files: %s: %w", f, err)
		}
		v.keys = append(v.keys, k)
	}
	if cfg.JWKSFile != "" {
		ks, err := loadJWKS(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("auth.jwks_file: %s: %w", cfg.JWKSFile, err)
		}
		v.keys = append(v.keys, ks...)
	}
	return v, nil
}

func publicKey(pub any) (key, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < 2048 {
			return key{}, fmt.Errorf("RSA key of %d bits: at least 2048 required", p.N.BitLen())
		}
		return key{rsa: p, algs: []string{"RS256", "RS384", "RS512"}}, nil
	case *ecdsa.PublicKey:
		alg, ok := map[string]string{"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[p.Curve.Params().Name]
		if !ok {
			return key{}, fmt.Errorf("unsupported curve %s", p.Curve.Params().Name)
		}
		return key{ec: p, algs: []string{alg}}, nil
	}
	return key{}, fmt.Errorf("unsupported key type %T", pub)
}

func loadPEM(path string) (key, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return key{}, err
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		return key{}, errors.New("no PEM block")
	}
	var pub any
	switch b.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(b.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(b.Bytes); err == nil {
			pub = cert.PublicKey
		}
	default:
		return key{}, fmt.Errorf("PEM block %q: want PUBLIC KEY or CERTIFICATE", b.Type)
	}
	if err != nil {
		return key{}, err
	}
	return publicKey(pub)
}

func loadJWKS(path string) ([]key, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set struct {
		Keys []struct {
			Kty, Kid, Alg, Use, Crv string
			N, E, X, Y              string
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, err
	}
	var out []key
	for i, j := range set.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		var pub any
		switch j.Kty {
		case "RSA":
			n, e := b64int(j.N), b64int(j.E)
			if n == nil || e == nil || !e.IsInt64() {
				return nil, fmt.Errorf("keys[%d]: bad n or e", i)
			}
			pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
		case "EC":
			curve := map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}[j.Crv]
			x, y := b64int(j.X), b64int(j.Y)
			if curve == nil || x == nil || y == nil {
				return nil, fmt.Errorf("keys[%d]: bad crv, x or y", i)
			}
			pub = &ecdsa.PublicKey{Curve: curve, X: x, Y: y}
		default:
			continue // other key types cannot verify our algorithms
		}
		k, err := publicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		k.kid = j.Kid
		if j.Alg != "" {
			if !contains(k.algs, j.Alg) {
				return nil, fmt.Errorf("keys[%d]: alg %s does not fit a %s key", i, j.Alg, j.Kty)
			}
			k.algs = []string{j.Alg}
		}
		out = append(out, k)
	}
	return out, nil
}

func b64int(s string) *big.Int {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil
	}
	return new(big.Int).SetBytes(b)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var hashes = map[byte]crypto.Hash{'2': crypto.SHA256, '3': crypto.SHA384, '5': crypto.SHA512}

// Verify checks token at time now and returns its claims.
func (v *Verifier) Verify(token string, now time.Time) (Claims, error) {
	var c Claims
	if len(token) > v.cfg.MaxTokenBytes {
		return c, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, v.cfg.MaxTokenBytes)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("%w: not three dot-separated segments", ErrInvalidToken)
	}
	var seg [3][]byte
	for i, p := range parts {
		b, err := base64.RawURLEncoding.Strict().DecodeString(p)
		if err != nil {
			return c, fmt.Errorf("%w: segment %d is not unpadded base64url", ErrInvalidToken, i+1)
		}
		seg[i] = b
	}
	var h struct {
		Alg  string          `json:"alg"`
		Kid  string          `json:"kid"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := json.Unmarshal(seg[0], &h); err != nil {
		return c, fmt.Errorf("%w: header: %v", ErrInvalidToken, err)
	}
	if h.Crit != nil {
		return c, fmt.Errorf("%w: crit header not supported", ErrInvalidToken)
	}
	if !v.verifySig(h.Alg, h.Kid, []byte(parts[0]+"."+parts[1]), seg[2]) {
		return c, fmt.Errorf("%w: signature does not verify with any %q key", ErrInvalidToken, h.Alg)
	}
	return v.claims(seg[1], now)
}

func (v *Verifier) verifySig(alg, kid string, signed, sig []byte) bool {
	if len(alg) != 5 {
		return false
	}
	hf, ok := hashes[alg[2]]
	if !ok || alg[3:] != map[crypto.Hash]string{crypto.SHA256: "56", crypto.SHA384: "84", crypto.SHA512: "12"}[hf] {
		return false
	}
	var hh hash.Hash
	switch hf {
	case crypto.SHA256:
		hh = sha256.New()
	case crypto.SHA384:
		hh = sha512.New384()
	default:
		hh = sha512.New()
	}
	hh.Write(signed)
	digest := hh.Sum(nil)
	for _, k := range v.keys {
		if (kid != "" && k.kid != "" && k.kid != kid) || !contains(k.algs, alg) {
			continue
		}
		switch {
		case k.hmac != nil:
			m := hmac.New(map[crypto.Hash]func() hash.Hash{crypto.SHA256: sha256.New, crypto.SHA384: sha512.New384, crypto.SHA512: sha512.New}[hf], k.hmac)
			m.Write(signed)
			if hmac.Equal(m.Sum(nil), sig) {
				return true
			}
		case k.rsa != nil:
			if rsa.VerifyPKCS1v15(k.rsa, hf, digest, sig) == nil {
				return true
			}
		case k.ec != nil:
			size := (k.ec.Curve.Params().BitSize + 7) / 8
			if len(sig) == 2*size {
				r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
				if ecdsa.Verify(k.ec, digest, r, s) {
					return true
				}
			}
		}
	}
	return false
}

func (v *Verifier) claims(payload []byte, now time.Time) (Claims, error) {
	var c Claims
	var p struct {
		Sub  *string         `json:"sub"`
		Exp  *float64        `json:"exp"`
		Nbf  *float64        `json:"nbf"`
		Iat  *float64        `json:"iat"`
		Iss  string          `json:"iss"`
		Aud  json.RawMessage `json:"aud"`
		Info json.RawMessage `json:"info"`
		// Channel and Channels: wrong types make the token invalid.
		Channel  string   `json:"channel"`
		Channels []string `json:"channels"`
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&p); err != nil {
		return c, fmt.Errorf("%w: claims: %v", ErrInvalidToken, err)
	}
	leeway := v.cfg.Leeway
	at := func(f float64) time.Time { return time.Unix(int64(f), 0) }
	switch {
	case !timeClaimOK(p.Exp) || !timeClaimOK(p.Nbf) || !timeClaimOK(p.Iat):
		// int64(f) of a float past 2^63 is undefined (on amd64 the most
		// negative int64: the distant past), so nbf 2^63 would pass.
		return c, fmt.Errorf("%w: exp, nbf or iat outside 0 to %d", ErrInvalidToken, int64(maxTimeClaim))
	case p.Sub == nil || *p.Sub == "":
		return c, fmt.Errorf("%w: no sub", ErrInvalidToken)
	case p.Exp == nil:
		return c, fmt.Errorf("%w: no exp", ErrInvalidToken)
	case p.Nbf != nil && now.Add(leeway).Before(at(*p.Nbf)):
		return c, fmt.Errorf("%w: not valid before nbf", ErrInvalidToken)
	case p.Iat != nil && now.Add(leeway).Before(at(*p.Iat)):
		return c, fmt.Errorf("%w: issued in the future", ErrInvalidToken)
	case v.cfg.Issuer != "" && p.Iss != v.cfg.Issuer:
		return c, fmt.Errorf("%w: issuer %q", ErrInvalidToken, p.Iss)
	case v.cfg.Audience != "" && !audience(p.Aud, v.cfg.Audience):
		return c, fmt.Errorf("%w: audience does not include %q", ErrInvalidToken, v.cfg.Audience)
	case !now.Add(-leeway).Before(at(*p.Exp)):
		return c, ErrTokenExpired
	}
	return Claims{Subject: *p.Sub, ExpiresAt: at(*p.Exp), Info: p.Info, Channel: p.Channel, Channels: p.Channels}, nil
}

// maxTimeClaim is the last second of year 9999: a NumericDate past it is
// refused rather than converted.
const maxTimeClaim = 253402300799

// timeClaimOK says whether a NumericDate claim, if present, is in
// [0, maxTimeClaim].
func timeClaimOK(f *float64) bool { return f == nil || (*f >= 0 && *f <= maxTimeClaim) }

func audience(raw json.RawMessage, want string) bool {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == want
	}
	var many []string
	return json.Unmarshal(raw, &many) == nil && contains(many, want)
}

// SignHS256 returns an HS256 token with claims: dev mode's demo tokens and
// tests use it.
func SignHS256(secret []byte, claims map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signed))
	return signed + "." + enc.EncodeToString(m.Sum(nil)), nil
}
