package backoff

import (
	"testing"
	"time"
)

func TestNextFollowsSynapse(t *testing.T) {
	p := Default()
	for _, tc := range []struct {
		name    string
		jitter  float64
		current time.Duration
		want    time.Duration
	}{
		{"first failure", 1, 0, 10 * time.Minute},
		{"after a short Retry-After", 1, 5 * time.Second, 10 * time.Minute},
		{"low jitter", 0.8, 10 * time.Minute, 16 * time.Minute},
		{"high jitter", 1.4, 10 * time.Minute, 28 * time.Minute},
		{"capped", 1.4, 6 * 24 * time.Hour, 7 * 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.Jitter = func() float64 { return tc.jitter }
			if got := p.Next(tc.current); got != tc.want {
				t.Fatalf("Next(%v) = %v, want %v", tc.current, got, tc.want)
			}
		})
	}
}

func TestNextJitterRange(t *testing.T) {
	p := Default()
	for range 1000 {
		got := p.Next(time.Hour)
		if got < 96*time.Minute || got >= 168*time.Minute {
			t.Fatalf("Next(1h) = %v, outside [1h36m, 2h48m)", got)
		}
	}
}

func TestCatchUpAfterThreshold(t *testing.T) {
	p := Default()
	if p.CatchUp(time.Hour) {
		t.Fatal("an interval of exactly catch_up_after must not catch up")
	}
	if !p.CatchUp(time.Hour + time.Second) {
		t.Fatal("an interval over catch_up_after must catch up")
	}
}
