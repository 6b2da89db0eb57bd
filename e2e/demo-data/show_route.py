"""Prints the router's routing table for one endpoint (the route.json of its routing ConfigMap)."""
import json
import sys

table = json.load(sys.stdin)
print("endpoint", table["endpoint"], "auth", table["auth"]["mode"])
for d in table["deployments"]:
    target = f"{d['service']}:{d['port']}{d['scoringPath']}"
    print(f"  {d['name']}: traffic {d['traffic']} %, mirror {d['mirror']} %, service {target}")
