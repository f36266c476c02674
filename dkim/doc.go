// Package dkim holds latchkey's DKIM keys and signs outgoing mail with them,
// on top of github.com/emersion/go-msgauth/dkim.
//
// Steps, from first start to a signed message:
//  1. EnsureKeys generates any key file named in the config that is missing
//     (PKCS#8 PEM, mode 0600), so the trial config works out of the box.
//  2. PublicRecord and ZoneLine give the TXT record to publish at
//     <selector>._domainkey.<domain>; Fingerprint identifies a key.
//  3. LoadKeyring reads every key; Keyring.Sign returns one DKIM-Signature
//     header per selector of the sender's domain (RSA and Ed25519 side by
//     side when both are configured), relaxed/relaxed, over-signing the
//     headers that matter so that none can be added in transit.
//  4. Key rotation: add a new selector entry and key file, publish its
//     record, call Keyring.Update (or Reload when only files changed); once
//     the record has propagated, remove the old entry and Update again.
//     A reload that fails keeps the keys already loaded.
//
// The subpackage dkimtest verifies signatures with an independent
// implementation (Debian's python3-dkim) for tests.
package dkim
