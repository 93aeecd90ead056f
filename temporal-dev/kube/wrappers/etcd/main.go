// etcd, as go.etcd.io/etcd/v3's main package builds it: the server's etcdmain entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
