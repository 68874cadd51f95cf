package config_test

import (
	"bytes"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/fedsender/fedsender/internal/config"
)

// TestShippedConfigs: the development configuration and the one in the
// Kubernetes manifest's ConfigMap load and validate, with the environment
// the manifest sets (the signing key is a file of this test's).
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
	manifest, err := os.ReadFile("../../deploy/k8s/fedsender.yaml")
	if err != nil {
		t.Fatal(err)
	}
	k8s, env := k8sConfig(t, manifest)
	// Every FEDSENDER_ variable the Deployment sets, as the secrets fill them.
	withSecrets := []string{"FEDSENDER_SIGNING_KEY_PATH=" + key}
	for _, name := range env {
		value := "t"
		if name == "FEDSENDER_POSTGRES_URL" {
			value = "postgres://fedsender:secret@db:5432/synapse?sslmode=verify-full"
		}
		withSecrets = append(withSecrets, name+"="+value)
	}
	for _, c := range []struct {
		name    string
		data    []byte
		environ []string
		check   func(config.Config) bool
	}{
		// The dev configuration trusts the CA the local receiver writes
		// (go tool task receiver) and lets fedsender connect to it.
		{"dev", dev, []string{"FEDSENDER_SIGNING_KEY_PATH=" + key, "FEDSENDER_FEDERATION_CA_FILE=" + ca}, func(c config.Config) bool {
			return c.Postgres.URL == "" &&
				slices.Equal(c.Federation.IPRangeAllowlist, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})
		}},
		{"k8s", k8s, []string{"FEDSENDER_SIGNING_KEY_PATH=" + key, "FEDSENDER_ADMIN_TOKEN=t"},
			func(c config.Config) bool { return c.Postgres.URL == "" && c.NATS.URL != "" }},
		{"k8s with its secrets", k8s, withSecrets, func(c config.Config) bool {
			return c.Postgres.URL != "" && c.Postgres.Schema == "fedsender" && c.Admin.Token != ""
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse(c.data, c.environ)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !c.check(cfg) {
				t.Errorf("unexpected configuration: %+v", cfg.Redacted())
			}
		})
	}
}

// k8sConfig returns the ConfigMap's fedsender.yaml and the FEDSENDER_
// variables the Deployment's container sets.
func k8sConfig(t *testing.T, manifest []byte) (file []byte, env []string) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(manifest))
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Env []struct {
								Name string `yaml:"name"`
							} `yaml:"env"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		err := dec.Decode(&doc)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("manifest: %v", err)
		}
		switch doc.Kind {
		case "ConfigMap":
			file = []byte(doc.Data["fedsender.yaml"])
		case "Deployment":
			for _, c := range doc.Spec.Template.Spec.Containers {
				for _, e := range c.Env {
					if strings.HasPrefix(e.Name, "FEDSENDER_") {
						env = append(env, e.Name)
					}
				}
			}
		}
	}
	if len(file) == 0 || len(env) == 0 {
		t.Fatalf("the manifest has no ConfigMap fedsender.yaml (%d bytes) or no FEDSENDER_ variables (%v)", len(file), env)
	}
	return file, env
}
