module fhirgen.dev/bench/go-baseline

go 1.19
