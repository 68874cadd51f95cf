package config_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fedsender/fedsender/internal/config"
)

// TestShippedConfigs: the development configuration loads and validates
// (the signing key is a file of this test's). The Kubernetes overlays'
// configurations are checked with their Deployments' environment in
// deploy/k8s (TestDeploymentChecklist).
func TestShippedConfigs(t *testing.T) {
	key := filepath.Join(t.TempDir(), "signing.key")
	ca := filepath.Join(t.TempDir(), "receiver-ca.pem")
	for _, f := range []string{key, ca} {
		if err := os.WriteFile(f, nil, 0o600); err != nil { // Validate checks they exist
			t.Fatal(err)
		}
	}
	dev, err := os.ReadFile("../../deploy/fedsender.dev.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The dev configuration trusts the CA the local receiver writes
	// (go tool task receiver) and lets fedsender connect to it.
	cfg, err := config.Parse(dev, []string{"FEDSENDER_SIGNING_KEY_PATH=" + key, "FEDSENDER_FEDERATION_CA_FILE=" + ca})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if cfg.Postgres.URL != "" ||
		!slices.Equal(cfg.Federation.IPRangeAllowlist, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}) {
		t.Errorf("unexpected configuration: %+v", cfg.Redacted())
	}
}
