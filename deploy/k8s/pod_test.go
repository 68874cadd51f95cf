package k8s_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/fedsender/fedsender/internal/xmatrix"
)

// secretData is what the test's Secrets hold, by secret and key: the ones a
// deployment must create (docs/DEPLOY.md, "Secrets"). fedsender-postgres is
// optional and left out, as on a cluster without PostgreSQL.
func secretData(t *testing.T) map[string]map[string]string {
	t.Helper()
	key, err := xmatrix.GenerateKey("a_k8s")
	if err != nil {
		t.Fatal(err)
	}
	return map[string]map[string]string{
		"fedsender-signing-key": {"signing.key": string(key.MarshalKeyFile())},
		"fedsender-admin":       {"token": "admin-token"},
		"fedsender-nats":        {"password": "nats-password"},
	}
}

// pod is a rendered Deployment's pod made concrete on this machine: its
// volumes are directories under root (each mountPath at root+mountPath),
// filled as the kubelet fills them; args, environment and configuration
// name the same files at those places.
type pod struct {
	root   string
	spec   corev1.PodSpec
	c      corev1.Container
	args   []string
	env    []string
	config []byte // fedsender.yaml as the process reads it
}

// uid and gid are the pod's runAsUser and fsGroup.
func (p pod) uid() int { return int(*p.c.SecurityContext.RunAsUser) }
func (p pod) gid() int { return int(*p.spec.SecurityContext.FSGroup) }

// hostPath is where the pod's path lives on this machine.
func (p pod) hostPath(path string) string { return p.root + path }

// rewrite replaces every mount path in s by its place on this machine, in
// one pass, the longest first (/etc/fedsender/key before a /etc/fedsender).
func (p pod) rewrite(s string) string {
	paths := make([]string, 0, len(p.c.VolumeMounts))
	for _, m := range p.c.VolumeMounts {
		paths = append(paths, m.MountPath)
	}
	slices.SortFunc(paths, func(a, b string) int { return len(b) - len(a) })
	var pairs []string
	for _, path := range paths {
		pairs = append(pairs, path, p.hostPath(path))
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// makePod lays out the Deployment's only container on this machine, with
// the Secrets of secrets, as the kubelet would: ConfigMap and Secret volumes
// as files with their mode, group-owned by fsGroup; emptyDir and claims as
// empty directories the pod's user can write; the environment resolved from
// values, Secrets (an optional one that is missing leaves its variable out)
// and resource fields.
func makePod(t *testing.T, m manifests, secrets map[string]map[string]string) pod {
	t.Helper()
	d := one[*appsv1.Deployment](t, m)
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("the pod has %d containers and %d init containers; this test knows one container", len(spec.Containers), len(spec.InitContainers))
	}
	p := pod{root: t.TempDir(), spec: spec, c: spec.Containers[0]}
	// The kubelet's directories are readable by the pod's user: so is the
	// way to them here.
	for dir := p.root; dir != filepath.Dir(dir) && strings.HasPrefix(dir, os.TempDir()+"/"); dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	configMaps := map[string]*corev1.ConfigMap{}
	for _, cm := range of[*corev1.ConfigMap](m) {
		configMaps[cm.Name] = cm
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	for _, mount := range p.c.VolumeMounts {
		v, ok := volumes[mount.Name]
		if !ok {
			t.Fatalf("volumeMount %s: no volume of that name", mount.Name)
		}
		dir := p.hostPath(mount.MountPath)
		switch {
		case v.ConfigMap != nil:
			cm, ok := configMaps[v.ConfigMap.Name]
			if !ok {
				t.Fatalf("volume %s: the rendering has no ConfigMap %s", v.Name, v.ConfigMap.Name)
			}
			p.writeFiles(t, dir, cm.Data, v.ConfigMap.DefaultMode)
		case v.Secret != nil:
			data, ok := secrets[v.Secret.SecretName]
			if !ok {
				t.Fatalf("volume %s: the test has no Secret %s; docs/DEPLOY.md must tell how to create it, and secretData here", v.Name, v.Secret.SecretName)
			}
			p.writeFiles(t, dir, data, v.Secret.DefaultMode)
		case v.EmptyDir != nil, v.PersistentVolumeClaim != nil:
			p.mkdir(t, dir, 0o2775)
		default:
			t.Fatalf("volume %s: a kind this test does not lay out", v.Name)
		}
	}
	for _, a := range p.c.Args {
		p.args = append(p.args, p.rewrite(a))
	}
	for _, e := range p.c.Env {
		value, ok := p.envValue(t, e, secrets)
		if ok {
			p.env = append(p.env, e.Name+"="+p.rewrite(value))
		}
	}
	config, err := os.ReadFile(p.hostPath("/etc/fedsender/config/fedsender.yaml"))
	if err != nil {
		t.Fatalf("the pod's configuration file: %v", err)
	}
	p.config = config
	return p
}

// writeFiles writes a ConfigMap's or Secret's keys into dir as files of the
// volume's mode (0644 by default), group fsGroup; the configuration's mount
// paths are rewritten to this machine's.
func (p pod) writeFiles(t *testing.T, dir string, data map[string]string, mode *int32) {
	t.Helper()
	p.mkdir(t, dir, 0o755)
	perm := os.FileMode(0o644)
	if mode != nil {
		perm = os.FileMode(*mode)
	}
	for name, content := range data {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(p.rewrite(content)), perm); err != nil {
			t.Fatal(err)
		}
		p.chown(t, f)
	}
}

func (p pod) mkdir(t *testing.T, dir string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		t.Fatal(err)
	}
	p.chown(t, dir)
}

// chown gives a file to the pod's fsGroup, as the kubelet does; as another
// user than root the file stays the test's (then the pod runs as the test's
// user too).
func (p pod) chown(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	if err := os.Chown(path, 0, p.gid()); err != nil {
		t.Fatal(err)
	}
}

// envValue resolves one variable of the container as the kubelet does.
func (p pod) envValue(t *testing.T, e corev1.EnvVar, secrets map[string]map[string]string) (string, bool) {
	t.Helper()
	switch from := e.ValueFrom; {
	case from == nil:
		return e.Value, true
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		value, ok := secrets[ref.Name][ref.Key]
		if !ok && (ref.Optional == nil || !*ref.Optional) {
			t.Fatalf("env %s: the test has no Secret %s with key %s", e.Name, ref.Name, ref.Key)
		}
		return value, ok
	case from.ResourceFieldRef != nil:
		ref := from.ResourceFieldRef
		q, ok := p.c.Resources.Limits[corev1.ResourceName(strings.TrimPrefix(ref.Resource, "limits."))]
		if !ok || !strings.HasPrefix(ref.Resource, "limits.") {
			t.Fatalf("env %s: resource field %s is not a limit the container sets", e.Name, ref.Resource)
		}
		divisor := int64(1)
		if !ref.Divisor.IsZero() {
			divisor = ref.Divisor.Value()
		}
		// The kubelet rounds up to a whole number of divisors.
		return strconv.FormatInt((q.Value()+divisor-1)/divisor, 10), true
	default:
		t.Fatalf("env %s: a source this test does not resolve", e.Name)
		return "", false
	}
}

// serviceLinkEnv is what the kubelet puts into a pod's environment for a
// Service with this cluster IP when service links are on (the docker-link
// variables, pkg/kubelet/envvars): <NAME>_SERVICE_HOST, _SERVICE_PORT,
// _SERVICE_PORT_<PORTNAME> per named port, <NAME>_PORT for the first port,
// and <NAME>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR} per port.
func serviceLinkEnv(svc *corev1.Service, clusterIP string) []string {
	envName := func(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }
	name := envName(svc.Name)
	ports := svc.Spec.Ports
	if len(ports) == 0 {
		return nil
	}
	env := []string{
		name + "_SERVICE_HOST=" + clusterIP,
		name + "_SERVICE_PORT=" + strconv.Itoa(int(ports[0].Port)),
	}
	for _, p := range ports {
		if p.Name != "" {
			env = append(env, name+"_SERVICE_PORT_"+envName(p.Name)+"="+strconv.Itoa(int(p.Port)))
		}
	}
	protocol := func(p corev1.ServicePort) string {
		if p.Protocol == "" {
			return "TCP"
		}
		return string(p.Protocol)
	}
	url := func(p corev1.ServicePort) string {
		return strings.ToLower(protocol(p)) + "://" + net.JoinHostPort(clusterIP, strconv.Itoa(int(p.Port)))
	}
	env = append(env, name+"_PORT="+url(ports[0]))
	for _, p := range ports {
		prefix := fmt.Sprintf("%s_PORT_%d_%s", name, p.Port, protocol(p))
		env = append(env, prefix+"="+url(p), prefix+"_PROTO="+strings.ToLower(protocol(p)),
			prefix+"_PORT="+strconv.Itoa(int(p.Port)), prefix+"_ADDR="+clusterIP)
	}
	return env
}

// clusterEnv is every variable Kubernetes adds to the container's own: the
// API server's Service always, and each Service's links (whatever
// enableServiceLinks says: fedsender must start with them too, for an
// operator's own Service named fedsender-*).
func clusterEnv(m manifests) []string {
	env := []string{"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443"}
	for i, svc := range of[*corev1.Service](m) {
		env = append(env, serviceLinkEnv(svc, fmt.Sprintf("10.96.0.%d", 10+i))...)
	}
	return slices.Clip(env)
}
