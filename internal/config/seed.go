package config

import (
	"fmt"
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
	{"push_appserver_rate_limit", "rate_limit (seconds between pushes per device; 0 = off)"},
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

// apply maps the seed's options onto c. An APNS or FCM option configures the
// app named "apns" or "fcm", creating it with that kind if the file does not
// define it.
func (s *seedOptions) apply(c *Config) []error {
	var ps []error
	if s.Debugging != nil {
		c.Debugging = *s.Debugging
	}
	if s.RateLimit != nil {
		if *s.RateLimit < 0 {
			ps = append(ps, fmt.Errorf("push_appserver_rate_limit: must not be negative"))
		}
		c.RateLimit = Duration(*s.RateLimit * float64(time.Second))
		c.rateLimitExplicit = true
	}
	app := func(name, kind string) *App {
		if c.Apps == nil {
			c.Apps = map[string]*App{}
		}
		if c.Apps[name] == nil {
			c.Apps[name] = &App{Kind: kind}
		}
		return c.Apps[name]
	}
	str := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	secs := func(dst *Duration, v *float64, key string) {
		if v == nil {
			return
		}
		if *v < 0 {
			ps = append(ps, fmt.Errorf("%s: must not be negative", key))
		}
		*dst = Duration(*v * float64(time.Second))
	}
	obsolete := func(set bool, key string) {
		if set {
			c.Obsolete = append(c.Obsolete, key)
		}
	}
	if s.APNSCert != nil || s.APNSKey != nil || s.APNSCAPath != nil || s.APNSSandbox != nil ||
		s.APNSMutableContent != nil || s.APNSTTL != nil || s.APNSPriority != nil || s.APNSAlert != nil || s.APNSTopic != nil {
		a := app("apns", KindAPNS)
		str(&a.CertFile, s.APNSCert)
		str(&a.KeyFile, s.APNSKey)
		str(&a.CAPath, s.APNSCAPath)
		str(&a.Priority, s.APNSPriority)
		str(&a.AlertBody, s.APNSAlert)
		str(&a.Topic, s.APNSTopic)
		secs(&a.TTL, s.APNSTTL, "push_appserver_apns_push_ttl")
		if s.APNSSandbox != nil {
			a.Sandbox = s.APNSSandbox
		}
		if s.APNSMutableContent != nil {
			a.MutableContent = s.APNSMutableContent
		}
	}
	if s.FCMCAPath != nil || s.FCMTTL != nil || s.FCMPriority != nil {
		a := app("fcm", KindFCM)
		str(&a.CAPath, s.FCMCAPath)
		str(&a.AndroidPriority, s.FCMPriority)
		secs(&a.TTL, s.FCMTTL, "push_appserver_fcm_push_ttl")
	}
	obsolete(s.APNSCiphers != nil, "push_appserver_apns_ciphers")
	obsolete(s.APNSFeedback != nil, "push_appserver_apns_feedback_request_interval")
	obsolete(s.FCMKey != nil, "push_appserver_fcm_key")
	obsolete(s.FCMCiphers != nil, "push_appserver_fcm_ciphers")
	return ps
}
