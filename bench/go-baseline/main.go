// The loader fhirgen started from, as a yardstick: a fixed pool of goroutines draining a
// channel, each building a small Patient with encoding/json and POSTing it with net/http.
// bench/run.sh measures its CPU time per request against fhirgen's on the same sink.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

type name struct {
	Family string   `json:"family"`
	Given  []string `json:"given"`
}

type identifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type patient struct {
	ResourceType string       `json:"resourceType"`
	Identifier   []identifier `json:"identifier"`
	Name         []name       `json:"name"`
	Gender       string       `json:"gender"`
	BirthDate    string       `json:"birthDate"`
}

func main() {
	base := flag.String("url", "http://127.0.0.1:8080/fhir", "FHIR base URL")
	count := flag.Int("count", 10000, "resources to POST")
	workers := flag.Int("workers", 64, "concurrent workers")
	flag.Parse()

	client := &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: *workers, MaxConnsPerHost: *workers},
	}
	jobs := make(chan int, *workers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	start := time.Now()
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				p := patient{
					ResourceType: "Patient",
					Identifier:   []identifier{{System: "https://example.org/sid/patient", Value: fmt.Sprintf("p-%d", i)}},
					Name:         []name{{Family: "Smith", Given: []string{"Alex"}}},
					Gender:       "female",
					BirthDate:    "1980-01-01",
				}
				body, _ := json.Marshal(p)
				req, _ := http.NewRequest("POST", *base+"/Patient", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/fhir+json;charset=utf-8")
				resp, err := client.Do(req)
				if err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 300 {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < *count; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	fmt.Printf("{\"stored\":%d,\"failed\":%d,\"elapsed_seconds\":%.3f,\"requests_per_second\":%.1f}\n",
		*count-failed, failed, elapsed, float64(*count-failed)/elapsed)
	if failed > 0 {
		os.Exit(1)
	}
}
