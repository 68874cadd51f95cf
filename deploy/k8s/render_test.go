// Package k8s_test checks fedsender's Kubernetes manifests without a
// cluster: it renders every overlay with kustomize's own library (krusty),
// decodes every document strictly into the Kubernetes API types, evaluates
// the pods against Pod Security "restricted", compares the rendering with
// golden files, runs kube-score on it, and starts the fedsender binary
// exactly as a rendered Deployment says and probes it as the kubelet would
// (kubelet_test.go).
//
// After a deliberate change of the manifests, rewrite the golden files with
//
//	go test ./deploy/k8s/ -run TestRender -update
package k8s_test

import (
	"bytes"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

var update = flag.Bool("update", false, "rewrite the golden files of the rendered overlays")

// rendering is one kustomization the tests build: an overlay as shipped, or
// the production overlay with every optional component turned on, as
// docs/DEPLOY.md tells an operator to do it.
type rendering struct {
	name string // also the golden file's name
	dir  string // in the in-memory copy of deploy/k8s
	// edit, if set, changes the in-memory copy before the build.
	edit func(t *testing.T, fsys filesys.FileSystem)
}

var renderings = []rendering{
	{name: "dev", dir: "/k8s/overlays/dev"},
	{name: "prod", dir: "/k8s/overlays/prod"},
	{name: "prod-components", dir: "/k8s/overlays/prod", edit: enableComponents},
}

// componentsOff is the commented-out block of the production overlay that
// an operator uncomments to turn the optional components on.
const componentsOff = `# components:
#   - ../../components/monitoring    # ServiceMonitor and PrometheusRule
#   - ../../components/autoscaling   # HorizontalPodAutoscaler on the queue lag
`

// enableComponents uncomments componentsOff in the production overlay.
func enableComponents(t *testing.T, fsys filesys.FileSystem) {
	t.Helper()
	const path = "/k8s/overlays/prod/kustomization.yaml"
	k, err := fsys.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(k, []byte(componentsOff)) {
		t.Fatalf("%s lacks the commented-out components block docs/DEPLOY.md tells to uncomment:\n%s", path, componentsOff)
	}
	on := strings.NewReplacer("# components:", "components:", "#   - ", "  - ").Replace(componentsOff)
	if err := fsys.WriteFile(path, bytes.Replace(k, []byte(componentsOff), []byte(on), 1)); err != nil {
		t.Fatal(err)
	}
}

// manifests is what a rendering produced: each document as YAML, decoded.
type manifests struct {
	yaml    []byte
	objects []runtime.Object
}

// of returns the objects of type T.
func of[T runtime.Object](m manifests) []T {
	var out []T
	for _, o := range m.objects {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// one returns the only object of type T, failing the test if there is not
// exactly one.
func one[T runtime.Object](t *testing.T, m manifests) T {
	t.Helper()
	all := of[T](m)
	if len(all) != 1 {
		var zero T
		t.Fatalf("%d objects of type %T, want 1", len(all), zero)
	}
	return all[0]
}

// memFS copies deploy/k8s (this directory, without the tests' own files)
// into an in-memory file system at /k8s.
func memFS(t *testing.T) filesys.FileSystem {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == "testdata" || path == "kube-score" {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return mem.WriteFile(filepath.Join("/k8s", path), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	return mem
}

// decoder decodes YAML strictly (an unknown or duplicated field is an error)
// into the API types the manifests use.
func decoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme,
		autoscalingv2.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
}

// render builds every rendering once per test.
func render(t *testing.T) map[string]manifests {
	t.Helper()
	dec := decoder(t)
	out := map[string]manifests{}
	for _, r := range renderings {
		fsys := memFS(t)
		if r.edit != nil {
			r.edit(t, fsys)
		}
		res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, r.dir)
		if err != nil {
			t.Fatalf("kustomize build %s: %v", r.name, err)
		}
		var m manifests
		for _, res := range res.Resources() {
			doc, err := res.AsYAML()
			if err != nil {
				t.Fatalf("%s: %s: %v", r.name, res.CurId(), err)
			}
			obj, _, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s: %s does not decode strictly: %v", r.name, res.CurId(), err)
			}
			m.objects = append(m.objects, obj)
			if len(m.yaml) > 0 {
				m.yaml = append(m.yaml, "---\n"...)
			}
			m.yaml = append(m.yaml, doc...)
		}
		out[r.name] = m
	}
	return out
}

// TestRender: every overlay renders, every document decodes strictly into
// its API type, and the result is the golden file's (rewritten by -update).
func TestRender(t *testing.T) {
	for name, m := range render(t) {
		golden := filepath.Join("testdata", name+".yaml")
		if *update {
			if err := os.WriteFile(golden, m.yaml, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (write the golden files with go test -run TestRender -update)", err)
		}
		if diff := cmp.Diff(string(want), string(m.yaml)); diff != "" {
			t.Errorf("%s renders differently from %s (-golden +rendered); after a deliberate change run go test -run TestRender -update:\n%s",
				name, golden, diff)
		}
	}
}

// TestGoldenFilesHaveARendering guards against golden files of
// renderings that no longer exist.
func TestGoldenFilesHaveARendering(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, r := range renderings {
		known[r.name+".yaml"] = true
	}
	for _, f := range files {
		if !known[filepath.Base(f)] {
			t.Errorf("%s is the golden file of no rendering: remove it", f)
		}
	}
}

// configOf returns the fedsender.yaml of the ConfigMap the Deployment mounts.
func configOf(t *testing.T, m manifests) []byte {
	t.Helper()
	d := one[*appsv1.Deployment](t, m)
	var name string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			name = v.ConfigMap.Name
		}
	}
	for _, cm := range of[*corev1.ConfigMap](m) {
		if cm.Name == name {
			if f, ok := cm.Data["fedsender.yaml"]; ok {
				return []byte(f)
			}
		}
	}
	t.Fatalf("the Deployment mounts the ConfigMap %q, which the rendering lacks or which has no fedsender.yaml", name)
	return nil
}
