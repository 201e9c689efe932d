-- Prosody side of push-appserver: the component it connects as, and
-- mod_cloud_notify (XEP-0357) on the users' host. Include it from
-- prosody.cfg.lua (Include "conf.d/push-appserver.cfg.lua") or copy the
-- lines. The component secret must be the one in push-appserver's
-- [[component]] table.

-- Prosody listens for components on loopback only.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

VirtualHost "example.org"
    modules_enabled = { "cloud_notify" }
    -- Optional: let pushes carry sender and body, only if the apps' privacy
    -- policy allows it (push-appserver also needs include_summary = true).
    push_notification_with_body = false
    push_notification_with_sender = false

Component "push.example.org"
    component_secret = "change-me: the secret from push-appserver.toml"
