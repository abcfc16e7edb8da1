fn main() {
    // A DEL's detached veth deleter is this binary again (see deferred_delete).
    ferry_bridge::deferred_delete::serve_if_requested();
    cni::skel::run(ferry_bridge::ABOUT, &ferry_bridge::BridgePlugin)
}
