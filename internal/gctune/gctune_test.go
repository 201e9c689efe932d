package gctune

import (
	"runtime/debug"
	"testing"
)

func TestApply(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	for _, tt := range []struct {
		name string
		env  map[string]string
		set  bool
		want int
	}{
		{"no GOGC", nil, true, DefaultGCPercent},
		{"GOGC set", map[string]string{"GOGC": "50"}, false, 100},
		{"GOGC off", map[string]string{"GOGC": "off"}, false, 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			if set := Apply(func(k string) string { return tt.env[k] }); set != tt.set {
				t.Errorf("Apply = %v, want %v", set, tt.set)
			}
			if got := debug.SetGCPercent(100); got != tt.want {
				t.Errorf("GOGC %d after Apply, want %d", got, tt.want)
			}
		})
	}
}
