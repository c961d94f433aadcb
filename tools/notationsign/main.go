// Command notationsign signs an image with the Notary Project's own libraries, so tests verify
// real Notation signatures: it builds the Notation payload (the target manifest's descriptor),
// signs it into a JWS or COSE envelope with notation-core-go, and pushes the envelope as an
// OCI referrer of the manifest (artifactType application/vnd.cncf.notary.signature) with
// notation-go's registry client. The signing time is a flag so tests can sign with a
// certificate that has since expired, and -push-envelope pushes an envelope as it is (tests
// tamper with one first). With -verify it is the reference verifier instead: notation-go judges
// an envelope file by a trust policy and prints its verdict as JSON, which tests compare with
// Muster's own verifier.
package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/digitorus/timestamp"
	"github.com/notaryproject/notation-core-go/signature"
	"github.com/notaryproject/notation-core-go/signature/cose"
	"github.com/notaryproject/notation-core-go/signature/jws"
	"github.com/notaryproject/notation-go"
	"github.com/notaryproject/notation-go/registry"
	"github.com/notaryproject/notation-go/verifier"
	"github.com/notaryproject/notation-go/verifier/trustpolicy"
	"github.com/notaryproject/notation-go/verifier/truststore"
	"github.com/notaryproject/tspclient-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

// payloadMediaType is the Notary Project's payload content type (notation-go keeps its
// Payload type internal, so the same two fields are declared here).
const payloadMediaType = "application/vnd.cncf.notary.payload.v1+json"

type payload struct {
	TargetArtifact ocispec.Descriptor `json:"targetArtifact"`
}

func main() {
	keyPath := flag.String("key", "", "PEM private key (PKCS#8, PKCS#1 or SEC 1)")
	chainPath := flag.String("chain", "", "PEM certificate chain, signing certificate first")
	format := flag.String("envelope", "jws", "envelope format: jws or cose")
	signingTime := flag.String("signing-time", "", "RFC 3339 signing time (default: now)")
	expiry := flag.Duration("expiry", 0, "signature expiry after the signing time (0: none)")
	reference := flag.String("reference", "", "registry/repository@sha256:... to sign and push a referrer to")
	plainHTTP := flag.Bool("plain-http", true, "talk to the registry over plain HTTP (test registries)")
	descriptorPath := flag.String("descriptor", "", "sign this JSON OCI descriptor instead of resolving -reference")
	out := flag.String("out", "", "also write the envelope to this file")
	tsaKey := flag.String("tsa-key", "", "timestamp the signature with a test TSA holding this PEM key")
	tsaChain := flag.String("tsa-chain", "", "the test TSA's PEM certificate chain, its certificate first")
	timestampTime := flag.String("timestamp-time", "", "RFC 3339 time the test TSA vouches for (default: the signing time)")
	pushEnvelope := flag.String("push-envelope", "", "push this envelope file to -reference instead of signing")
	verifyPath := flag.String("verify", "", "judge this envelope file with notation-go instead of signing")
	trustStorePath := flag.String("trust-store", "", "with -verify: PEM CA certificates, the trust store")
	tsaStorePath := flag.String("tsa-store", "", "with -verify: PEM TSA root certificates (a tsa trust store)")
	verifyTimestamp := flag.String("verify-timestamp", "always", "with -verify: always or afterCertExpiry")
	level := flag.String("level", "strict", "with -verify: strict, permissive or audit")
	var identities multiFlag
	flag.Var(&identities, "identity", "with -verify: a trusted identity (repeatable; default *)")
	flag.Parse()
	var err error
	if *verifyPath != "" {
		err = verify(*verifyPath, *format, *descriptorPath, *trustStorePath, *tsaStorePath, *verifyTimestamp, *level, identities)
	} else if *pushEnvelope != "" {
		err = push(*format, *reference, *plainHTTP, *pushEnvelope)
	} else {
		var tsa *testTSA
		if *tsaKey != "" {
			tsa, err = newTestTSA(*tsaKey, *tsaChain, *timestampTime)
			if err != nil {
				log.Fatalf("notationsign: %v", err)
			}
		}
		err = run(*keyPath, *chainPath, *format, *signingTime, *expiry, *reference, *plainHTTP, *descriptorPath, *out, tsa)
	}
	if err != nil {
		log.Fatalf("notationsign: %v", err)
	}
}

func run(keyPath, chainPath, format, signingTime string, expiry time.Duration, reference string, plainHTTP bool, descriptorPath, out string, tsa *testTSA) error {
	ctx := context.Background()
	key, err := readKey(keyPath)
	if err != nil {
		return err
	}
	chain, err := readChain(chainPath)
	if err != nil {
		return err
	}
	mediaType, err := envelopeMediaType(format)
	if err != nil {
		return err
	}
	when := time.Now()
	if signingTime != "" {
		if when, err = time.Parse(time.RFC3339, signingTime); err != nil {
			return fmt.Errorf("signing time: %w", err)
		}
	}

	var repo registry.Repository
	var target ocispec.Descriptor
	switch {
	case descriptorPath != "":
		raw, err := os.ReadFile(descriptorPath)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &target); err != nil {
			return fmt.Errorf("descriptor: %w", err)
		}
	case reference != "":
		remoteRepo, err := remote.NewRepository(reference)
		if err != nil {
			return err
		}
		remoteRepo.PlainHTTP = plainHTTP
		repo = registry.NewRepository(remoteRepo)
		if target, err = repo.Resolve(ctx, remoteRepo.Reference.Reference); err != nil {
			return fmt.Errorf("resolve %s: %w", reference, err)
		}
	default:
		return errors.New("give -reference or -descriptor")
	}

	// As notation-go's signer does: only these fields of the descriptor are signed.
	signed := ocispec.Descriptor{MediaType: target.MediaType, Digest: target.Digest, Size: target.Size, Annotations: target.Annotations}
	content, err := json.Marshal(payload{TargetArtifact: signed})
	if err != nil {
		return err
	}
	signer, err := signature.NewLocalSigner(chain, key)
	if err != nil {
		return err
	}
	request := &signature.SignRequest{
		Payload:       signature.Payload{ContentType: payloadMediaType, Content: content},
		Signer:        signer,
		SigningTime:   when,
		SigningScheme: signature.SigningSchemeX509,
		SigningAgent:  "muster-test-notationsign/1.0",
	}
	if expiry != 0 {
		request.Expiry = when.Add(expiry)
	}
	if tsa != nil {
		if tsa.at.IsZero() {
			tsa.at = when
		}
		request.Timestamper = tsa
		request.TSARootCAs = x509.NewCertPool()
		request.TSARootCAs.AddCert(tsa.chain[len(tsa.chain)-1])
	}
	envelope, err := signature.NewEnvelope(mediaType)
	if err != nil {
		return err
	}
	blob, err := envelope.Sign(request)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if out != "" {
		if err := os.WriteFile(out, blob, 0o644); err != nil {
			return err
		}
	}
	if repo == nil {
		return nil
	}
	_, manifest, err := repo.PushSignature(ctx, mediaType, blob, target, nil)
	if err != nil {
		return fmt.Errorf("push signature: %w", err)
	}
	fmt.Println(manifest.Digest)
	return nil
}

func push(format, reference string, plainHTTP bool, envelopePath string) error {
	ctx := context.Background()
	mediaType, err := envelopeMediaType(format)
	if err != nil {
		return err
	}
	blob, err := os.ReadFile(envelopePath)
	if err != nil {
		return err
	}
	remoteRepo, err := remote.NewRepository(reference)
	if err != nil {
		return err
	}
	remoteRepo.PlainHTTP = plainHTTP
	repo := registry.NewRepository(remoteRepo)
	target, err := repo.Resolve(ctx, remoteRepo.Reference.Reference)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", reference, err)
	}
	_, manifest, err := repo.PushSignature(ctx, mediaType, blob, target, nil)
	if err != nil {
		return fmt.Errorf("push signature: %w", err)
	}
	fmt.Println(manifest.Digest)
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// pemTrustStore holds the named stores ca:test and, when given, tsa:test, read from PEM files.
type pemTrustStore struct{ ca, tsa []*x509.Certificate }

func (s pemTrustStore) GetCertificates(_ context.Context, storeType truststore.Type, name string) ([]*x509.Certificate, error) {
	switch {
	case storeType == truststore.TypeCA && name == "test":
		return s.ca, nil
	case storeType == truststore.TypeTSA && name == "test" && s.tsa != nil:
		return s.tsa, nil
	}
	return nil, fmt.Errorf("no trust store %s:%s", storeType, name)
}

// testTSA answers RFC 3161 requests itself, signing with a test TSA key (digitorus/timestamp
// builds the response), so signatures can carry a real timestamp countersignature offline.
type testTSA struct {
	key   crypto.Signer
	chain []*x509.Certificate
	at    time.Time
}

func newTestTSA(keyPath, chainPath, at string) (*testTSA, error) {
	key, err := readKey(keyPath)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("the TSA key cannot sign")
	}
	chain, err := readChain(chainPath)
	if err != nil {
		return nil, err
	}
	tsa := &testTSA{key: signer, chain: chain}
	if at != "" {
		if tsa.at, err = time.Parse(time.RFC3339, at); err != nil {
			return nil, fmt.Errorf("timestamp time: %w", err)
		}
	}
	return tsa, nil
}

func (t *testTSA) Timestamp(_ context.Context, request *tspclient.Request) (*tspclient.Response, error) {
	der, err := request.MarshalBinary()
	if err != nil {
		return nil, err
	}
	parsed, err := timestamp.ParseRequest(der)
	if err != nil {
		return nil, err
	}
	token := timestamp.Timestamp{
		HashAlgorithm:     parsed.HashAlgorithm,
		HashedMessage:     parsed.HashedMessage,
		Time:              t.at,
		Accuracy:          time.Second,
		Nonce:             parsed.Nonce,
		Policy:            asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 4146, 1, 2},
		AddTSACertificate: true,
		Certificates:      t.chain[1:],
	}
	answer, err := token.CreateResponseWithOpts(t.chain[0], t.key, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	var response tspclient.Response
	if err := response.UnmarshalBinary(answer); err != nil {
		return nil, err
	}
	return &response, nil
}

type verdict struct {
	Verified bool     `json:"verified"`
	Error    string   `json:"error,omitempty"`
	Logged   []string `json:"logged"`
}

func verify(envelopePath, format, descriptorPath, trustStorePath, tsaStorePath, verifyTimestamp, level string, identities []string) error {
	mediaType, err := envelopeMediaType(format)
	if err != nil {
		return err
	}
	blob, err := os.ReadFile(envelopePath)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(descriptorPath)
	if err != nil {
		return err
	}
	var target ocispec.Descriptor
	if err := json.Unmarshal(raw, &target); err != nil {
		return fmt.Errorf("descriptor: %w", err)
	}
	cas, err := readChain(trustStorePath)
	if err != nil {
		return err
	}
	stores := []string{"ca:test"}
	var tsaRoots []*x509.Certificate
	if tsaStorePath != "" {
		if tsaRoots, err = readChain(tsaStorePath); err != nil {
			return err
		}
		stores = append(stores, "tsa:test")
	}
	if len(identities) == 0 {
		identities = []string{"*"}
	}
	policy := &trustpolicy.Document{
		Version: "1.0",
		TrustPolicies: []trustpolicy.TrustPolicy{{
			Name:           "test",
			RegistryScopes: []string{"*"},
			SignatureVerification: trustpolicy.SignatureVerification{
				VerificationLevel: level,
				VerifyTimestamp:   trustpolicy.TimestampOption(verifyTimestamp),
			},
			TrustStores:       stores,
			TrustedIdentities: identities,
		}},
	}
	reference, err := verifier.New(policy, pemTrustStore{ca: cas, tsa: tsaRoots}, nil)
	if err != nil {
		return err
	}
	outcome, err := reference.Verify(context.Background(), target, blob, notation.VerifierVerifyOptions{
		ArtifactReference:  "registry.example/repo@" + target.Digest.String(),
		SignatureMediaType: mediaType,
	})
	result := verdict{Verified: err == nil, Logged: []string{}}
	if err != nil {
		result.Error = err.Error()
	}
	if outcome != nil {
		for _, check := range outcome.VerificationResults {
			if check.Error != nil && check.Action == trustpolicy.ActionLog {
				result.Logged = append(result.Logged, string(check.Type))
			}
		}
	}
	return json.NewEncoder(os.Stdout).Encode(result)
}

func envelopeMediaType(format string) (string, error) {
	switch format {
	case "jws":
		return jws.MediaTypeEnvelope, nil
	case "cose":
		return cose.MediaTypeEnvelope, nil
	}
	return "", fmt.Errorf("unknown envelope format %q (jws or cose)", format)
}

func readKey(path string) (crypto.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block", path)
	}
	if key, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return key, nil
	}
	if key, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return key, nil
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

func readChain(path string) ([]*x509.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	for {
		var block *pem.Block
		block, raw = pem.Decode(raw)
		if block == nil {
			break
		}
		certificate, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		chain = append(chain, certificate)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s holds no certificate", path)
	}
	return chain, nil
}
