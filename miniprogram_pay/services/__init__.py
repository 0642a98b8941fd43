"""Services: the payment flows as named steps, between the HTTP edge and storage/clients."""
