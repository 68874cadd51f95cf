package k8s_test

import (
	"os"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/conf"
	"gopkg.in/yaml.v3"
)

// natsValues is what the test reads of the NATS Helm chart's reference
// values.
type natsValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `yaml:"enabled"`
			Replicas int  `yaml:"replicas"`
		} `yaml:"cluster"`
		JetStream struct {
			Enabled   bool `yaml:"enabled"`
			FileStore struct {
				Enabled bool `yaml:"enabled"`
				PVC     struct {
					Enabled bool `yaml:"enabled"`
				} `yaml:"pvc"`
			} `yaml:"fileStore"`
		} `yaml:"jetstream"`
		Merge struct {
			Accounts map[string]struct {
				Users []struct {
					User        string              `yaml:"user"`
					Permissions map[string][]string `yaml:"permissions"`
				} `yaml:"users"`
			} `yaml:"accounts"`
		} `yaml:"merge"`
	} `yaml:"config"`
}

// TestNATSHelmValues: the reference values run 3 clustered servers with
// JetStream on volumes (fedsender's streams are R3), and give each user the
// permissions deploy/nats/permissions.conf defines for it, so that the two
// cannot drift apart.
func TestNATSHelmValues(t *testing.T) {
	data, err := os.ReadFile("overlays/prod/nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v natsValues
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 || !c.JetStream.Enabled || !c.JetStream.FileStore.Enabled || !c.JetStream.FileStore.PVC.Enabled {
		t.Errorf("NATS values: cluster %+v, JetStream %+v; want 3 clustered servers, JetStream on PersistentVolumeClaims", c.Cluster, c.JetStream)
	}

	perms, err := conf.ParseFile("../nats/permissions.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"fedsender": "FEDSENDER_PERMISSIONS", "synapse": "HOMESERVER_PERMISSIONS", "admin": "ADMIN_PERMISSIONS"}
	seen := 0
	for _, u := range c.Merge.Accounts["FEDSENDER"].Users {
		name, ok := want[u.User]
		if !ok {
			t.Errorf("NATS values: user %s has no permissions in deploy/nats/permissions.conf", u.User)
			continue
		}
		seen++
		defined, _ := perms[name].(map[string]any)
		for _, dir := range []string{"publish", "subscribe"} {
			var fromConf []string
			list, _ := defined[dir].([]any)
			for _, s := range list {
				fromConf = append(fromConf, s.(string))
			}
			if diff := cmp.Diff(slices.Sorted(slices.Values(fromConf)), slices.Sorted(slices.Values(u.Permissions[dir]))); diff != "" || len(fromConf) == 0 {
				t.Errorf("NATS values: user %s may %s other subjects than %s in deploy/nats/permissions.conf (-conf +values):\n%s", u.User, dir, name, diff)
			}
		}
	}
	if seen != len(want) {
		t.Errorf("NATS values: %d of the users %v in the account FEDSENDER", seen, want)
	}
}
