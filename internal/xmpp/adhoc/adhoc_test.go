package adhoc

import "testing"

func TestAccountOf(t *testing.T) {
	for _, tc := range []struct {
		from, bare, domain string
		bad                bool
	}{
		{from: "juliet@example.org/phone", bare: "juliet@example.org", domain: "example.org"},
		{from: "Juliet@Example.ORG/tablet", bare: "juliet@example.org", domain: "example.org"},
		{from: "juliet@example.org", bare: "juliet@example.org", domain: "example.org"},
		{from: "example.org", bad: true},
		{from: "@example.org", bad: true},
		{from: "", bad: true},
	} {
		a, err := accountOf(tc.from)
		if tc.bad {
			if err == nil {
				t.Errorf("accountOf(%q) = %+v, want an error", tc.from, a)
			}
			continue
		}
		if err != nil || a.Bare != tc.bare || a.Domain != tc.domain {
			t.Errorf("accountOf(%q) = %+v, %v; want %s, %s", tc.from, a, err, tc.bare, tc.domain)
		}
	}
}
