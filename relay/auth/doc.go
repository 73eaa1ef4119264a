// Package auth verifies the JSON Web Tokens (RFC 7519) that clients send in
// the connect command, and signs HS256 tokens for dev mode and tests.
//
// # Model
//
// A Verifier holds keys loaded once from configuration: HMAC secrets, PEM
// public keys and a JWKS file. A token is accepted when it is a compact JWS
// with exactly three base64url segments, its algorithm is one of HS256/384/
// 512, RS256/384/512, ES256/384/512, a configured key of that algorithm's
// own type verifies its signature (the header's "alg" never chooses the key
// type: an HS256 token cannot be checked against an RSA key's bytes), and
// its claims hold: "sub" a non-empty string (the user), "exp" required and
// in the future, "nbf" and "iat" not in the future, "iss"/"aud" as
// configured; Config.Leeway allows for clock skew.
//
// # Concurrency
//
// A Verifier is immutable after NewVerifier: Verify may be called from any
// goroutine.
package auth
