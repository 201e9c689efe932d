package gctune

import (
	"io/fs"
	"math"
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

// Under a cgroup's memory limit (a container's, systemd's MemoryMax=),
// the runtime's soft limit is set below it, so that a heap grown to three
// times the live one at GOGC 200 meets a collection before the OOM
// killer; the limit is the tightest of the process's cgroup and of those
// above it (a slice's, a container's whose systemd runs the server), as
// the kernel enforces it; no limit, none to be read, or GOMEMLIMIT set,
// and it is left alone.
func TestApplyMemoryLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(orig)
	const gib = 1 << 30
	for _, tt := range []struct {
		name  string
		env   map[string]string
		files map[string]string
		want  int64
	}{
		{"cgroup v2", nil, map[string]string{
			"/proc/self/cgroup": "0::/system.slice/push-appserver.service\n",
			"/sys/fs/cgroup/system.slice/push-appserver.service/memory.max": "1073741824\n",
		}, gib * 8 / 10},
		{"cgroup v2 in a namespace of its own", nil, map[string]string{
			"/proc/self/cgroup":         "0::/\n",
			"/sys/fs/cgroup/memory.max": "2147483648\n",
		}, 2 * gib * 8 / 10},
		{"cgroup v2 without a limit", nil, map[string]string{
			"/proc/self/cgroup":         "0::/\n",
			"/sys/fs/cgroup/memory.max": "max\n",
		}, 0},
		{"cgroup v1", nil, map[string]string{
			"/proc/self/cgroup": "5:devices:/docker/abc\n4:memory:/docker/abc\n0::/\n",
			"/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "1073741824\n",
		}, gib * 8 / 10},
		{"cgroup v1 without a limit", nil, map[string]string{
			"/proc/self/cgroup":                           "4:memory:/\n",
			"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, 0},
		// MemoryMax= on the slice binds the service in it, whose own
		// memory.max stays max.
		{"cgroup v2, the limit on the slice", nil, map[string]string{
			"/proc/self/cgroup": "0::/system.slice/push-appserver.service\n",
			"/sys/fs/cgroup/system.slice/push-appserver.service/memory.max": "max\n",
			"/sys/fs/cgroup/system.slice/memory.max":                        "1073741824\n",
			"/sys/fs/cgroup/memory.max":                                     "max\n",
		}, gib * 8 / 10},
		// A container (LXD, systemd-nspawn) with a namespace of its own,
		// whose systemd runs the server in a service without a limit.
		{"cgroup v2 in a namespace of its own, under its systemd", nil, map[string]string{
			"/proc/self/cgroup": "0::/system.slice/push-appserver.service\n",
			"/sys/fs/cgroup/system.slice/push-appserver.service/memory.max": "max\n",
			"/sys/fs/cgroup/system.slice/memory.max":                        "max\n",
			"/sys/fs/cgroup/memory.max":                                     "2147483648\n",
		}, 2 * gib * 8 / 10},
		{"cgroup v2, the tightest of the service's and the slice's", nil, map[string]string{
			"/proc/self/cgroup": "0::/system.slice/push-appserver.service\n",
			"/sys/fs/cgroup/system.slice/push-appserver.service/memory.max": "2147483648\n",
			"/sys/fs/cgroup/system.slice/memory.max":                        "1073741824\n",
		}, gib * 8 / 10},
		{"cgroup v1, the limit on the parent", nil, map[string]string{
			"/proc/self/cgroup": "4:memory:/kubepods/pod1/abc\n0::/\n",
			"/sys/fs/cgroup/memory/kubepods/pod1/abc/memory.limit_in_bytes": "9223372036854771712\n",
			"/sys/fs/cgroup/memory/kubepods/pod1/memory.limit_in_bytes":     "1073741824\n",
			"/sys/fs/cgroup/memory/memory.limit_in_bytes":                   "9223372036854771712\n",
		}, gib * 8 / 10},
		{"no cgroup", nil, map[string]string{}, 0},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "512MiB"}, map[string]string{
			"/proc/self/cgroup":         "0::/\n",
			"/sys/fs/cgroup/memory.max": "1073741824\n",
		}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			readFile := func(name string) ([]byte, error) {
				if s, ok := tt.files[name]; ok {
					return []byte(s), nil
				}
				return nil, fs.ErrNotExist
			}
			if got := ApplyMemoryLimit(func(k string) string { return tt.env[k] }, readFile); got != tt.want {
				t.Errorf("ApplyMemoryLimit = %d, want %d", got, tt.want)
			}
			want := tt.want
			if want == 0 {
				want = math.MaxInt64
			}
			if got := debug.SetMemoryLimit(-1); got != want {
				t.Errorf("the runtime's memory limit %d, want %d", got, want)
			}
		})
	}
}
