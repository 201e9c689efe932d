package httpapi

// MaxBatchInFlight is how many push-batch pushes do work at once.
const MaxBatchInFlight = maxBatchInFlight
