-- Prosody side of push-appserver: the component it connects as, and the
-- options of mod_cloud_notify (XEP-0357) on the users' host. Include it at
-- the end of prosody.cfg.lua (Include "conf.d/push-appserver.cfg.lua"), or
-- copy the lines. The component secret must be the one in push-appserver's
-- [[component]] table. Our end-to-end tests run Prosody with this file,
-- their own domain, port, jid and secret put in.
--
-- mod_cloud_notify itself (Debian package prosody-modules) is enabled in
-- prosody.cfg.lua: add "cloud_notify" to its modules_enabled, the global
-- list or that of VirtualHost "example.org". Not here: a modules_enabled
-- set for the host in this file would replace the one prosody.cfg.lua
-- gives it, and Prosody would silently stop loading those modules.

-- Prosody listens for components on loopback only.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

VirtualHost "example.org"
    -- Pushes for messages carry the dummy text "New Message!" as their
    -- body, which makes them alert pushes. true sends sender and real
    -- body instead, only if the apps' privacy policy allows it
    -- (push-appserver also needs include_summary = true to pass them on).
    push_notification_with_body = false
    push_notification_with_sender = false

Component "push.example.org"
    component_secret = "change-me: the secret from push-appserver.toml"
    -- With a single push-appserver instance, uncomment: a new connection
    -- then replaces one that went silent (a NAT or firewall that forgot
    -- it), which Prosody would otherwise hold, refusing the component's
    -- reconnection and routing every push into it, until its TCP gives up
    -- (about 15 minutes). Not with several instances, which would take
    -- the component from each other (see README, "Prosody").
    -- component_conflict_resolve = "kick_old"
