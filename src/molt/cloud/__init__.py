"""Cloud providers behind one protocol: kwok (local), aws (boto3) and the simulator's."""
