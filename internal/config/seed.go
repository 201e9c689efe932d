package config

import (
	"fmt"
	"math"
	"time"
)

// seedOptions are mod_push_appserver's option names, accepted at the top
// level of the file so an existing Prosody configuration's values can be
// copied over unchanged. apply maps them onto our options; SeedMapping
// documents the same mapping for the README and check-config.
type seedOptions struct {
	Debugging *bool    `toml:"push_appserver_debugging"`
	RateLimit *float64 `toml:"push_appserver_rate_limit"`

	APNSCert           *string  `toml:"push_appserver_apns_cert"`
	APNSKey            *string  `toml:"push_appserver_apns_key"`
	APNSCAPath         *string  `toml:"push_appserver_apns_capath"`
	APNSCiphers        *string  `toml:"push_appserver_apns_ciphers"`
	APNSSandbox        *bool    `toml:"push_appserver_apns_sandbox"`
	APNSMutableContent *bool    `toml:"push_appserver_apns_mutable_content"`
	APNSTTL            *float64 `toml:"push_appserver_apns_push_ttl"`
	APNSPriority       *string  `toml:"push_appserver_apns_push_priority"`
	APNSAlert          *string  `toml:"push_appserver_apns_push_alert"`
	APNSTopic          *string  `toml:"push_appserver_apns_topic"`
	APNSFeedback       *float64 `toml:"push_appserver_apns_feedback_request_interval"`

	FCMKey      *string  `toml:"push_appserver_fcm_key"`
	FCMCAPath   *string  `toml:"push_appserver_fcm_capath"`
	FCMCiphers  *string  `toml:"push_appserver_fcm_ciphers"`
	FCMTTL      *float64 `toml:"push_appserver_fcm_push_ttl"`
	FCMPriority *string  `toml:"push_appserver_fcm_push_priority"`
}

// SeedMapping lists each mod_push_appserver option and what it sets here.
var SeedMapping = [][2]string{
	{"push_appserver_debugging", "debugging"},
	{"push_appserver_rate_limit", "rate_limit (seconds between pushes per node and priority; 0 = off)"},
	{"push_appserver_apns_cert", "apps.apns.cert_file"},
	{"push_appserver_apns_key", "apps.apns.key_file"},
	{"push_appserver_apns_capath", "apps.apns.ca_path"},
	{"push_appserver_apns_ciphers", "obsolete: Go negotiates TLS 1.2/1.3 with modern ciphers"},
	{"push_appserver_apns_sandbox", "apps.apns.sandbox"},
	{"push_appserver_apns_mutable_content", "apps.apns.mutable_content"},
	{"push_appserver_apns_push_ttl", "apps.apns.ttl"},
	{"push_appserver_apns_push_priority", "apps.apns.priority"},
	{"push_appserver_apns_push_alert", "apps.apns.alert_body"},
	{"push_appserver_apns_topic", "apps.apns.topic"},
	{"push_appserver_apns_feedback_request_interval", "obsolete: Apple retired the feedback service; dead tokens are read from 410 answers"},
	{"push_appserver_fcm_key", "obsolete: Google shut down the legacy server-key API; use apps.fcm.service_account_file"},
	{"push_appserver_fcm_capath", "apps.fcm.ca_path"},
	{"push_appserver_fcm_ciphers", "obsolete: Go negotiates TLS 1.2/1.3 with modern ciphers"},
	{"push_appserver_fcm_push_ttl", "apps.fcm.ttl"},
	{"push_appserver_fcm_push_priority", "apps.fcm.android_priority"},
}

// secondsFit reports whether v seconds is a time.Duration: not NaN, not
// infinite, not past 292 years (a float64 to int64 conversion out of
// range gives math.MinInt64 on amd64).
func secondsFit(v float64) bool {
	ns := v * float64(time.Second)
	return !math.IsNaN(ns) && ns < math.MaxInt64 && ns > math.MinInt64
}

// apply maps the seed's options onto c. An APNS or FCM option configures the
// app named "apns" or "fcm", creating it with that kind if the file does not
// define it.
func (s *seedOptions) apply(c *Config) []error {
	var ps []error
	if s.Debugging != nil {
		if c.debuggingExplicit && c.Debugging != *s.Debugging {
			c.Warnings = append(c.Warnings, "push_appserver_debugging overrides debugging set in the file")
		}
		c.Debugging = *s.Debugging
	}
	if s.RateLimit != nil {
		if c.rateLimitExplicit && c.RateLimit != Duration(*s.RateLimit*float64(time.Second)) {
			c.Warnings = append(c.Warnings, "push_appserver_rate_limit overrides rate_limit set in the file")
		}
		if *s.RateLimit < 0 {
			ps = append(ps, fmt.Errorf("push_appserver_rate_limit: must not be negative"))
		} else if !secondsFit(*s.RateLimit) {
			ps = append(ps, fmt.Errorf("push_appserver_rate_limit: %v seconds is too long", *s.RateLimit))
		}
		c.RateLimit = Duration(*s.RateLimit * float64(time.Second))
		c.rateLimitExplicit = true
	}
	// fromFile: the app was in the file before the seed's options; the
	// options then override what the file said (a warning), else they
	// create the app (and are named when it lacks settings).
	var fromFile bool
	var appName string
	app := func(name, kind string, keys []string) *App {
		if c.Apps == nil {
			c.Apps = map[string]*App{}
		}
		appName = name
		fromFile = c.Apps[name] != nil
		if !fromFile {
			c.Apps[name] = &App{Kind: kind}
			if c.seedApps == nil {
				c.seedApps = map[string][]string{}
			}
			c.seedApps[name] = keys
		}
		return c.Apps[name]
	}
	shadow := func(key, field string) {
		if fromFile {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s overrides apps.%s.%s set in the file", key, appName, field))
		}
	}
	str := func(dst *string, v *string, key, field string) {
		if v != nil {
			if *dst != "" && *dst != *v {
				shadow(key, field)
			}
			*dst = *v
		}
	}
	secs := func(dst *Duration, v *float64, key, field string) {
		if v == nil {
			return
		}
		if *v < 0 {
			ps = append(ps, fmt.Errorf("%s: must not be negative", key))
		} else if !secondsFit(*v) {
			ps = append(ps, fmt.Errorf("%s: %v seconds is too long", key, *v))
		}
		d := Duration(*v * float64(time.Second))
		if *dst != 0 && *dst != d {
			shadow(key, field)
		}
		*dst = d
	}
	set := func(names ...string) []string {
		var out []string
		for i := 0; i+1 < len(names); i += 2 {
			if names[i+1] != "" {
				out = append(out, names[i])
			}
		}
		return out
	}
	given := func(set bool) string {
		if set {
			return "x"
		}
		return ""
	}
	obsolete := func(set bool, key string) {
		if set {
			c.Obsolete = append(c.Obsolete, key)
		}
	}
	if s.APNSCert != nil || s.APNSKey != nil || s.APNSCAPath != nil || s.APNSSandbox != nil ||
		s.APNSMutableContent != nil || s.APNSTTL != nil || s.APNSPriority != nil || s.APNSAlert != nil || s.APNSTopic != nil {
		a := app("apns", KindAPNS, set(
			"push_appserver_apns_cert", given(s.APNSCert != nil), "push_appserver_apns_key", given(s.APNSKey != nil),
			"push_appserver_apns_capath", given(s.APNSCAPath != nil), "push_appserver_apns_sandbox", given(s.APNSSandbox != nil),
			"push_appserver_apns_mutable_content", given(s.APNSMutableContent != nil), "push_appserver_apns_push_ttl", given(s.APNSTTL != nil),
			"push_appserver_apns_push_priority", given(s.APNSPriority != nil), "push_appserver_apns_push_alert", given(s.APNSAlert != nil),
			"push_appserver_apns_topic", given(s.APNSTopic != nil)))
		str(&a.CertFile, s.APNSCert, "push_appserver_apns_cert", "cert_file")
		str(&a.KeyFile, s.APNSKey, "push_appserver_apns_key", "key_file")
		str(&a.CAPath, s.APNSCAPath, "push_appserver_apns_capath", "ca_path")
		str(&a.Priority, s.APNSPriority, "push_appserver_apns_push_priority", "priority")
		str(&a.AlertBody, s.APNSAlert, "push_appserver_apns_push_alert", "alert_body")
		str(&a.Topic, s.APNSTopic, "push_appserver_apns_topic", "topic")
		secs(&a.TTL, s.APNSTTL, "push_appserver_apns_push_ttl", "ttl")
		if s.APNSSandbox != nil {
			a.Sandbox = s.APNSSandbox
		}
		if s.APNSMutableContent != nil {
			a.MutableContent = s.APNSMutableContent
		}
	}
	if s.FCMCAPath != nil || s.FCMTTL != nil || s.FCMPriority != nil {
		a := app("fcm", KindFCM, set(
			"push_appserver_fcm_capath", given(s.FCMCAPath != nil), "push_appserver_fcm_push_ttl", given(s.FCMTTL != nil),
			"push_appserver_fcm_push_priority", given(s.FCMPriority != nil)))
		str(&a.CAPath, s.FCMCAPath, "push_appserver_fcm_capath", "ca_path")
		str(&a.AndroidPriority, s.FCMPriority, "push_appserver_fcm_push_priority", "android_priority")
		secs(&a.TTL, s.FCMTTL, "push_appserver_fcm_push_ttl", "ttl")
	}
	obsolete(s.APNSCiphers != nil, "push_appserver_apns_ciphers")
	obsolete(s.APNSFeedback != nil, "push_appserver_apns_feedback_request_interval")
	obsolete(s.FCMKey != nil, "push_appserver_fcm_key")
	obsolete(s.FCMCiphers != nil, "push_appserver_fcm_ciphers")
	return ps
}
