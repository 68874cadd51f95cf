package k8s_test

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/fedsender/fedsender/internal/config"
)

// TestPodSecurityRestricted: every rendered pod passes Pod Security
// "restricted" at the newest version, as a namespace labelled
// pod-security.kubernetes.io/enforce=restricted admits it.
func TestPodSecurityRestricted(t *testing.T) {
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range render(t) {
		for _, d := range of[*appsv1.Deployment](m) {
			results := eval.EvaluatePod(api.LevelVersion{Level: api.LevelRestricted, Version: api.LatestVersion()},
				&d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec)
			if agg := policy.AggregateCheckResults(results); !agg.Allowed {
				t.Errorf("%s: Deployment %s is refused by Pod Security restricted: %s: %s", name, d.Name, agg.ForbiddenReason(), agg.ForbiddenDetail())
			}
		}
	}
}

// TestDeploymentChecklist: what a production deployment needs, on every
// rendering, against the configuration it ships.
func TestDeploymentChecklist(t *testing.T) {
	for name, m := range render(t) {
		t.Run(name, func(t *testing.T) {
			p := makePod(t, m, secretData(t))
			cfg := loadConfig(t, p)
			// With the optional secret fedsender-postgres, the read model
			// is PostgreSQL.
			secrets := secretData(t)
			secrets["fedsender-postgres"] = map[string]string{"url": "postgres://fedsender:secret@db:5432/synapse?sslmode=verify-full"}
			if pg := loadConfig(t, makePod(t, m, secrets)); pg.Postgres.URL == "" || cfg.Postgres.URL != "" {
				t.Errorf("postgres.url %q without the secret fedsender-postgres, %q with it", cfg.Postgres.URL, pg.Postgres.URL)
			}
			d := one[*appsv1.Deployment](t, m)
			spec := d.Spec.Template.Spec
			c := spec.Containers[0]

			if name == "dev" {
				// The embedded NATS server's store is one process's.
				if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || *d.Spec.Replicas != 1 || cfg.NATS.URL != "" {
					t.Errorf("dev: strategy %s, %d replicas, nats.url %q; want Recreate, 1, the embedded server", d.Spec.Strategy.Type, *d.Spec.Replicas, cfg.NATS.URL)
				}
			} else {
				ru := d.Spec.Strategy.RollingUpdate
				if ru == nil || ru.MaxSurge.String() != "1" || ru.MaxUnavailable.String() != "0" {
					t.Errorf("rolling update %+v, want maxSurge 1, maxUnavailable 0", ru)
				}
				if cfg.NATS.URL == "" || cfg.NATS.Replicas != 3 {
					t.Errorf("nats.url %q, nats.replicas %d; want a NATS cluster with R3", cfg.NATS.URL, cfg.NATS.Replicas)
				}
			}
			replicas := 0
			if d.Spec.Replicas != nil {
				replicas = int(*d.Spec.Replicas)
			}
			for _, h := range of[*autoscalingv2.HorizontalPodAutoscaler](m) {
				replicas = max(replicas, int(h.Spec.MaxReplicas))
				if d.Spec.Replicas != nil {
					t.Errorf("the HPA owns the replica count, but the Deployment sets replicas %d", *d.Spec.Replicas)
				}
			}
			if replicas < 1 || replicas > cfg.Queue.Partitions {
				t.Errorf("up to %d replicas for %d partitions: a replica beyond the partitions owns nothing", replicas, cfg.Queue.Partitions)
			}

			if got := c.StartupProbe.HTTPGet.Path; got != "/livez" {
				t.Errorf("startup probe %s, want /livez", got)
			}
			if got := c.ReadinessProbe.HTTPGet.Path; got != "/readyz" {
				t.Errorf("readiness probe %s, want /readyz", got)
			}
			if got := c.LivenessProbe.HTTPGet.Path; got != "/livez" {
				t.Errorf("liveness probe %s, want /livez", got)
			}
			patience := func(p *corev1.Probe) int32 { return p.PeriodSeconds * p.FailureThreshold }
			if patience(c.LivenessProbe) <= patience(c.ReadinessProbe) {
				t.Errorf("liveness gives up after %ds, readiness after %ds: liveness must be the more patient", patience(c.LivenessProbe), patience(c.ReadinessProbe))
			}
			// The drain finishes the in-flight transactions: the grace
			// period covers the longest one, and some.
			grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
			if grace < cfg.Federation.RequestTimeout+20*time.Second {
				t.Errorf("terminationGracePeriodSeconds %v, shorter than federation.request_timeout %v plus 20 s to drain", grace, cfg.Federation.RequestTimeout)
			}

			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Error("the pod mounts a service-account token")
			}
			if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
				t.Error("the pod gets service-link variables; want enableServiceLinks: false")
			}
			keys := map[string]bool{}
			for _, tsc := range spec.TopologySpreadConstraints {
				keys[tsc.TopologyKey] = tsc.LabelSelector != nil && matches(tsc.LabelSelector.MatchLabels, d.Spec.Template.Labels)
			}
			if !keys["kubernetes.io/hostname"] || !keys["topology.kubernetes.io/zone"] {
				t.Errorf("topology spread %v; want the pods spread over hosts and zones", keys)
			}
			if !slices.ContainsFunc(c.VolumeMounts, func(v corev1.VolumeMount) bool { return v.MountPath == "/tmp" }) {
				t.Error("no volume at /tmp on a read-only root file system")
			}
			if _, ok := c.Resources.Requests[corev1.ResourceEphemeralStorage]; !ok {
				t.Error("no ephemeral-storage request")
			}
			limit, ok := c.Resources.Limits[corev1.ResourceMemory]
			if !ok {
				t.Fatal("no memory limit")
			}
			if !slices.Contains(p.env, "GOMEMLIMIT="+strconv.FormatInt(limit.Value(), 10)) {
				t.Errorf("GOMEMLIMIT is not the memory limit in bytes (%d): environment %q", limit.Value(), p.env)
			}
			// Secrets by reference only: the rendering creates none, and no
			// variable carries one.
			if s := of[*corev1.Secret](m); len(s) > 0 {
				t.Errorf("the rendering holds %d Secrets; secrets are created apart (docs/DEPLOY.md)", len(s))
			}
			for _, e := range c.Env {
				if e.Value != "" && regexp.MustCompile(`TOKEN|PASSWORD|URL|KEY`).MatchString(e.Name) {
					t.Errorf("env %s has a literal value; take it from a Secret", e.Name)
				}
			}

			pdb := one[*policyv1.PodDisruptionBudget](t, m)
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.String() != "1" || !matches(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
				t.Errorf("PodDisruptionBudget %+v; want maxUnavailable 1 over the pods", pdb.Spec)
			}
			checkNetworkPolicies(t, m, d, name != "dev")
			checkMonitoring(t, m, cfg)
		})
	}
}

// loadConfig parses and validates the pod's configuration with its
// environment, as fedsender run does at start.
func loadConfig(t *testing.T, p pod) config.Config {
	t.Helper()
	cfg, err := config.Parse(p.config, p.env)
	if err != nil {
		t.Fatalf("the pod's configuration: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the pod's configuration: %v", err)
	}
	return cfg
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

// checkNetworkPolicies: the pods are default-deny both ways, and let in
// the admin and metrics ports and out DNS, federation (443, 8448) and, on
// a NATS cluster, its client port.
func checkNetworkPolicies(t *testing.T, m manifests, d *appsv1.Deployment, externalNATS bool) {
	t.Helper()
	var ingress, egress bool
	in, out := map[string]bool{}, map[string]bool{}
	for _, np := range of[*networkingv1.NetworkPolicy](m) {
		if !matches(np.Spec.PodSelector.MatchLabels, d.Spec.Template.Labels) {
			continue
		}
		ingress = ingress || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		egress = egress || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		for _, r := range np.Spec.Ingress {
			for _, p := range r.Ports {
				in[p.Port.String()] = true
			}
		}
		for _, r := range np.Spec.Egress {
			for _, p := range r.Ports {
				out[p.Port.String()] = true
			}
		}
	}
	if !ingress || !egress {
		t.Errorf("the pods are not default-deny for ingress (%v) and egress (%v)", ingress, egress)
	}
	want := []string{"53", "443", "8448"}
	if externalNATS {
		want = append(want, "4222")
	}
	for _, p := range want {
		if !out[p] {
			t.Errorf("no egress to port %s (allowed: %v)", p, out)
		}
	}
	for _, p := range []string{"admin", "metrics"} {
		if !in[p] {
			t.Errorf("no ingress to port %s (allowed: %v)", p, in)
		}
	}
}

// checkMonitoring: the alerts and the autoscaler use metrics fedsender
// exports (docs/OBSERVABILITY.md lists them) and its partition count.
func checkMonitoring(t *testing.T, m manifests, cfg config.Config) {
	t.Helper()
	doc, err := os.ReadFile("../../docs/OBSERVABILITY.md")
	if err != nil {
		t.Fatal(err)
	}
	exported := func(name string) bool {
		// The ownership gauge is exported by the replicas that own
		// partitions; its name is fixed here and in the alerts.
		return name == "fedsender_partitions_owned" ||
			regexp.MustCompile("`"+regexp.QuoteMeta(name)+"`").Match(doc)
	}
	metricName := regexp.MustCompile(`\bfedsender_[a-z_]+`)
	for _, r := range of[*monitoringv1.PrometheusRule](m) {
		for _, g := range r.Spec.Groups {
			for _, rule := range g.Rules {
				expr := rule.Expr.String()
				for _, name := range metricName.FindAllString(expr, -1) {
					if !exported(name) {
						t.Errorf("alert %s: %s is not a metric of docs/OBSERVABILITY.md", rule.Alert, name)
					}
				}
				if n := regexp.MustCompile(`fedsender_partitions_owned\) < (\d+)`).FindStringSubmatch(expr); n != nil && n[1] != strconv.Itoa(cfg.Queue.Partitions) {
					t.Errorf("alert %s counts %s partitions, the configuration has %d", rule.Alert, n[1], cfg.Queue.Partitions)
				}
			}
		}
	}
	for _, h := range of[*autoscalingv2.HorizontalPodAutoscaler](m) {
		for _, metric := range h.Spec.Metrics {
			if metric.Pods == nil || !exported(metric.Pods.Metric.Name) {
				t.Errorf("HPA metric %+v is not a pods metric of docs/OBSERVABILITY.md", metric)
			}
		}
		if b := h.Spec.Behavior; b == nil || b.ScaleDown == nil || b.ScaleDown.StabilizationWindowSeconds == nil || *b.ScaleDown.StabilizationWindowSeconds < 600 {
			t.Error("the HPA scales down within 10 minutes of a burst: partitions would move back and forth")
		}
	}
}
