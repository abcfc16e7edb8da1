// libcni-driver runs a CNI network list through the real libcni (Debian's
// golang-github-appc-cni-dev), the library behind containerd's go-cni and podman's CNI
// backend. ferry's tests use it to prove that ferry's plugins work under libcni and that
// ferry's runtime and libcni can read each other's result cache.
//
// Usage: libcni-driver add|check|del|gc|cached <network> <netns>
// Environment as cnitool: NETCONFPATH, CNI_PATH, CNI_IFNAME, CNI_ARGS, CAP_ARGS, plus
// CNI_CACHE_DIR for the cache directory (default /var/lib/cni).
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "libcni-driver: "+format+"\n", a...)
	os.Exit(1)
}

// containerID is cnitool's: "cnitool-" + hex of the first 10 bytes of sha512(abs path).
func containerID(netns string) string {
	abs, err := filepath.Abs(netns)
	if err != nil {
		fail("%v", err)
	}
	sum := sha512.Sum512([]byte(abs))
	return fmt.Sprintf("cnitool-%x", sum[:10])
}

func parseArgs(s string) [][2]string {
	var out [][2]string
	if s == "" {
		return out
	}
	for _, pair := range strings.Split(s, ";") {
		kv := strings.Split(pair, "=")
		if len(kv) != 2 || kv[0] == "" || kv[1] == "" {
			fail("invalid CNI_ARGS pair %q", pair)
		}
		out = append(out, [2]string{kv[0], kv[1]})
	}
	return out
}

func main() {
	if len(os.Args) < 4 {
		fail("usage: libcni-driver add|check|del|gc|cached <network> <netns>")
	}
	verb, network, netns := os.Args[1], os.Args[2], os.Args[3]
	confDir := os.Getenv("NETCONFPATH")
	if confDir == "" {
		confDir = "/etc/cni/net.d"
	}
	cacheDir := os.Getenv("CNI_CACHE_DIR")
	if cacheDir == "" {
		cacheDir = libcni.CacheDir
	}
	list, err := libcni.LoadConfList(confDir, network)
	if err != nil {
		fail("loading %q: %v", network, err)
	}
	ifname := os.Getenv("CNI_IFNAME")
	if ifname == "" {
		ifname = "eth0"
	}
	capArgs := map[string]interface{}{}
	if s := os.Getenv("CAP_ARGS"); s != "" {
		if err := json.Unmarshal([]byte(s), &capArgs); err != nil {
			fail("CAP_ARGS: %v", err)
		}
	}
	absNetns, _ := filepath.Abs(netns)
	rt := &libcni.RuntimeConf{
		ContainerID:    containerID(netns),
		NetNS:          absNetns,
		IfName:         ifname,
		Args:           parseArgs(os.Getenv("CNI_ARGS")),
		CapabilityArgs: capArgs,
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), cacheDir, nil)
	ctx := context.Background()
	switch verb {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail("add: %v", err)
		}
		if err := res.Print(); err != nil {
			fail("printing the result: %v", err)
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail("check: %v", err)
		}
	case "del":
		// Use the cached runtime config (args, capabilities) when there is one, as
		// containerd does.
		if _, cachedRt, err := cni.GetNetworkListCachedConfig(list, rt); err == nil && cachedRt != nil {
			rt = cachedRt
		}
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail("del: %v", err)
		}
	case "gc":
		// libcni 1.1.x has no GC: DEL every cached attachment of this network, which is
		// what a newer libcni's GC does for attachments that are not valid.
		files, _ := ioutil.ReadDir(filepath.Join(cacheDir, "results"))
		for _, f := range files {
			data, err := ioutil.ReadFile(filepath.Join(cacheDir, "results", f.Name()))
			if err != nil {
				continue
			}
			var entry struct {
				Kind        string `json:"kind"`
				ContainerID string `json:"containerId"`
				IfName      string `json:"ifName"`
				NetworkName string `json:"networkName"`
				Netns       string `json:"netns"`
			}
			if json.Unmarshal(data, &entry) != nil || entry.Kind != libcni.CNICacheV1 || entry.NetworkName != list.Name {
				continue
			}
			stale := &libcni.RuntimeConf{ContainerID: entry.ContainerID, IfName: entry.IfName, NetNS: entry.Netns}
			// libcni 1.1.x does not cache the netns; the caller's is the best we know.
			if stale.NetNS == "" && entry.ContainerID == rt.ContainerID {
				stale.NetNS = rt.NetNS
			}
			if _, cachedRt, err := cni.GetNetworkListCachedConfig(list, stale); err == nil && cachedRt != nil {
				stale = cachedRt
			}
			if err := cni.DelNetworkList(ctx, list, stale); err != nil {
				fail("gc: deleting %s/%s: %v", entry.ContainerID, entry.IfName, err)
			}
		}
	case "cached":
		res, err := cni.GetNetworkListCachedResult(list, rt)
		if err != nil {
			fail("reading the cache: %v", err)
		}
		if res == nil {
			fail("no cached result")
		}
		if err := res.Print(); err != nil {
			fail("printing the cached result: %v", err)
		}
	default:
		fail("unknown verb %q", verb)
	}
}
