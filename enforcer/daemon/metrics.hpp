// The enforcer's metrics as Prometheus text (exposition format 0.0.4), written to a file
// that node_exporter's textfile collector can read.
#pragma once

#include <map>
#include <string>
#include <utility>

namespace bulkhead::enforcer {

class Metrics {
public:
    enum class Kind { Counter, Gauge };

    // Labels are rendered as given, e.g. R"(mode="diff")"; one metric name has one kind.
    void set(const std::string& name, double value, const std::string& labels = {});
    void add(const std::string& name, double delta, const std::string& labels = {});
    double get(const std::string& name, const std::string& labels = {}) const;
    void describe(const std::string& name, Kind kind, std::string help);

    std::string render() const;

private:
    struct Family {
        Kind kind = Kind::Gauge;
        std::string help;
        std::map<std::string, double> samples;  // labels -> value
    };
    std::map<std::string, Family> families_;
};

}  // namespace bulkhead::enforcer
