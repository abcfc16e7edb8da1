fn main() {
    cni::skel::run(ferry_bridge::ABOUT, &ferry_bridge::BridgePlugin)
}
