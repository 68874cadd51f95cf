package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"
)

// serviceLinkEnv is what the kubelet puts into a pod's environment for a
// Service with this cluster IP (the docker-link variables,
// pkg/kubelet/envvars): <NAME>_SERVICE_HOST, _SERVICE_PORT,
// _SERVICE_PORT_<PORTNAME> per named port, <NAME>_PORT for the first port,
// and <NAME>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR} per port.
func serviceLinkEnv(svc k8sService, clusterIP string) []string {
	envName := func(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }
	name := envName(svc.Metadata.Name)
	ports := svc.Spec.Ports
	if len(ports) == 0 {
		return nil
	}
	env := []string{
		name + "_SERVICE_HOST=" + clusterIP,
		name + "_SERVICE_PORT=" + strconv.Itoa(ports[0].Port),
	}
	for _, p := range ports {
		if p.Name != "" {
			env = append(env, name+"_SERVICE_PORT_"+envName(p.Name)+"="+strconv.Itoa(p.Port))
		}
	}
	url := func(p k8sPort) string {
		return strings.ToLower(p.protocol()) + "://" + net.JoinHostPort(clusterIP, strconv.Itoa(p.Port))
	}
	env = append(env, name+"_PORT="+url(ports[0]))
	for _, p := range ports {
		prefix := fmt.Sprintf("%s_PORT_%d_%s", name, p.Port, p.protocol())
		env = append(env, prefix+"="+url(p), prefix+"_PROTO="+strings.ToLower(p.protocol()),
			prefix+"_PORT="+strconv.Itoa(p.Port), prefix+"_ADDR="+clusterIP)
	}
	return env
}

type k8sPort struct {
	Name     string `yaml:"name"`
	Port     int    `yaml:"port"`
	Protocol string `yaml:"protocol"`
}

func (p k8sPort) protocol() string {
	if p.Protocol == "" {
		return "TCP"
	}
	return strings.ToUpper(p.Protocol)
}

type k8sService struct {
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		ClusterIP string    `yaml:"clusterIP"`
		Ports     []k8sPort `yaml:"ports"`
	} `yaml:"spec"`
}

// k8sManifest is what the test reads of deploy/k8s/fedsender.yaml: its
// Services, whether the Deployment's pods get service links, and the
// ConfigMap's fedsender.yaml.
type k8sManifest struct {
	services     []k8sService
	serviceLinks bool
	config       string
}

func readK8sManifest(t *testing.T) k8sManifest {
	t.Helper()
	data, err := os.ReadFile("../../deploy/k8s/fedsender.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := k8sManifest{serviceLinks: true} // the Kubernetes default
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			break
		}
		var kind struct {
			Kind string `yaml:"kind"`
			Data map[string]string
			Spec struct {
				Template struct {
					Spec struct {
						EnableServiceLinks *bool `yaml:"enableServiceLinks"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := doc.Decode(&kind); err != nil {
			t.Fatal(err)
		}
		switch kind.Kind {
		case "Service":
			var svc k8sService
			if err := doc.Decode(&svc); err != nil {
				t.Fatal(err)
			}
			m.services = append(m.services, svc)
		case "Deployment":
			if l := kind.Spec.Template.Spec.EnableServiceLinks; l != nil {
				m.serviceLinks = *l
			}
		case "ConfigMap":
			m.config = kind.Data["fedsender.yaml"]
		}
	}
	if len(m.services) == 0 || m.config == "" {
		t.Fatalf("deploy/k8s/fedsender.yaml: found %d Services and config %q", len(m.services), m.config)
	}
	return m
}

// TestKubernetesServiceLinkVariables: the shipped manifest turns service
// links off, and fedsender still starts and serves /readyz with the
// configuration of the manifest's ConfigMap and every variable Kubernetes
// would inject for the manifest's Services (as it does where service links
// are on, or for an operator's own Service named fedsender-*).
func TestKubernetesServiceLinkVariables(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	m := readK8sManifest(t)
	if m.serviceLinks {
		t.Errorf("deploy/k8s/fedsender.yaml: the Deployment's pods get service-link variables; set enableServiceLinks: false")
	}
	env := []string{"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443"}
	for i, svc := range m.services {
		env = append(env, serviceLinkEnv(svc, fmt.Sprintf("10.96.0.%d", 10+i))...)
	}
	t.Logf("service-link variables: %q", env)

	dir := t.TempDir()
	conf := filepath.Join(dir, "fedsender.yaml")
	if err := os.WriteFile(conf, []byte(m.config), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, keyPath, _ := keyAndCAFiles(t, dir, "k8s")
	ns := runNATS(t, server.Options{})
	adminAddr := localAddr(t)
	// What the cluster provides: the key secret, the admin token, NATS and
	// the volume, here in local places.
	env = append(env, "FEDSENDER_SIGNING_KEY_PATH="+keyPath, "FEDSENDER_ADMIN_TOKEN=t",
		"FEDSENDER_NATS_URL="+ns.ClientURL(), "FEDSENDER_NATS_REPLICAS=1", "FEDSENDER_DATA_DIR="+filepath.Join(dir, "data"),
		"FEDSENDER_ADMIN_LISTEN="+adminAddr, "FEDSENDER_METRICS_LISTEN=127.0.0.1:0")
	r := startBinary(t, env, "run", "--config", conf)
	r.waitReady(adminAddr, 60*time.Second)
	r.stop()
}
