package httpapi

// MaxBatchInFlight is how many push-batch pushes do work at once.
const MaxBatchInFlight = maxBatchInFlight

// MaxBatchWaiting is how many push-batch pushes wait on a timer without
// a working place.
const MaxBatchWaiting = maxBatchWaiting
