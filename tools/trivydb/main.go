// Command trivydb writes a bbolt file in the layout trivy reads (trivy-db schema 2).
//
// It reads a JSON document from standard input:
//
//	{"puts": [{"buckets": ["debian 12", "openssl"], "key": "CVE-2024-0001", "value": {...}}, ...]}
//
// and stores each value, JSON-encoded, under key in the nested buckets (created as
// needed) of the bbolt file named by the only argument. Tests use it to build a tiny
// vulnerability database for offline scans.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

type put struct {
	Buckets []string        `json:"buckets"`
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
}

type spec struct {
	Puts []put `json:"puts"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: trivydb PATH < spec.json")
		os.Exit(2)
	}
	var s spec
	decoder := json.NewDecoder(os.Stdin)
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&s); err != nil {
		fmt.Fprintln(os.Stderr, "trivydb: bad spec:", err)
		os.Exit(2)
	}
	db, err := bolt.Open(os.Args[1], 0o600, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "trivydb:", err)
		os.Exit(1)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, p := range s.Puts {
			if len(p.Buckets) == 0 {
				return fmt.Errorf("put %q names no bucket", p.Key)
			}
			bucket, err := tx.CreateBucketIfNotExists([]byte(p.Buckets[0]))
			if err != nil {
				return err
			}
			for _, name := range p.Buckets[1:] {
				if bucket, err = bucket.CreateBucketIfNotExists([]byte(name)); err != nil {
					return err
				}
			}
			if err := bucket.Put([]byte(p.Key), p.Value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "trivydb:", err)
		os.Exit(1)
	}
}
