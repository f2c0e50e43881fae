#include "enforcer/daemon/metrics.hpp"

#include <cmath>
#include <cstdio>

namespace bulkhead::enforcer {

void Metrics::set(const std::string& name, double value, const std::string& labels) {
    families_[name].samples[labels] = value;
}

void Metrics::add(const std::string& name, double delta, const std::string& labels) {
    families_[name].samples[labels] += delta;
}

double Metrics::get(const std::string& name, const std::string& labels) const {
    auto family = families_.find(name);
    if (family == families_.end()) {
        return 0;
    }
    auto sample = family->second.samples.find(labels);
    return sample == family->second.samples.end() ? 0 : sample->second;
}

void Metrics::describe(const std::string& name, Kind kind, std::string help) {
    auto& family = families_[name];
    family.kind = kind;
    family.help = std::move(help);
}

std::string Metrics::render() const {
    std::string out;
    char number[64];
    for (const auto& [name, family] : families_) {
        if (!family.help.empty()) {
            out += "# HELP " + name + " " + family.help + "\n";
        }
        out += "# TYPE " + name + (family.kind == Kind::Counter ? " counter\n" : " gauge\n");
        for (const auto& [labels, value] : family.samples) {
            if (std::floor(value) == value && std::fabs(value) < 1e15) {
                std::snprintf(number, sizeof number, "%.0f", value);
            } else {
                std::snprintf(number, sizeof number, "%.9g", value);
            }
            out += name;
            if (!labels.empty()) {
                out += "{" + labels + "}";
            }
            out += " ";
            out += number;
            out += "\n";
        }
    }
    return out;
}

}  // namespace bulkhead::enforcer
